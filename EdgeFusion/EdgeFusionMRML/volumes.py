"""Volume nodes to SimpleITK images and back, and colour nodes to colour tables.

Coordinate conventions: Slicer's volume nodes map voxel indices to RAS
(right-anterior-superior) millimetres with their IJKToRAS matrix; ITK and
SimpleITK use LPS (left-posterior-superior). The two differ by a sign flip of the
first two axes, applied to the origin and to the rows of the direction matrix.
Voxel arrays need no reordering: ``slicer.util.arrayFromVolume`` and
``SimpleITK.GetArrayFromImage`` are both indexed ``[k, j, i]`` (slice, row, column).
"""

from __future__ import annotations

import numpy as np

#: Multiplying RAS coordinates by this gives LPS coordinates (and back: it is its own inverse).
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])

#: Number of samples taken from a procedural (continuous) colour map; look-up tables keep their own entries.
PROCEDURAL_COLOUR_SAMPLES = 256


def matrix_to_array(vtk_matrix) -> np.ndarray:
    """A vtkMatrix4x4 as a 4x4 float64 numpy array."""
    return np.array([[vtk_matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def array_to_matrix(array: np.ndarray):
    """A 4x4 numpy array as a new vtkMatrix4x4."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row, column]))
    return matrix


def ijk_to_ras(volume_node) -> np.ndarray:
    """The node's voxel-index to RAS matrix (4x4), in the node's own (parent transform) frame."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return matrix_to_array(matrix)


def voxel_array(volume_node) -> np.ndarray:
    """A copy of the node's voxels, ``[k, j, i]`` for scalars and ``[k, j, i, component]`` for vectors."""
    import slicer

    return np.array(slicer.util.arrayFromVolume(volume_node), copy=True)


def number_of_components(volume_node) -> int:
    image = volume_node.GetImageData()
    return image.GetNumberOfScalarComponents() if image is not None else 0


def sitk_image_from_array(array: np.ndarray, ijk_to_ras_matrix: np.ndarray, is_vector: bool):
    """A SimpleITK image (LPS geometry) from a ``[k, j, i(, c)]`` array and its IJK-to-RAS matrix."""
    import SimpleITK as sitk

    linear = ijk_to_ras_matrix[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"voxel spacing must be positive, got {spacing.tolist()}")
    direction_ras = linear / spacing  # columns: unit vectors of the i, j, k axes in RAS
    image = sitk.GetImageFromArray(array, isVector=is_vector)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(x) for x in RAS_TO_LPS @ ijk_to_ras_matrix[:3, 3]])
    image.SetDirection([float(x) for x in (RAS_TO_LPS @ direction_ras).ravel()])
    return image


def ijk_to_ras_from_sitk(image) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix of a 3D SimpleITK image (inverse of :func:`sitk_image_from_array`)."""
    direction_lps = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = RAS_TO_LPS @ direction_lps @ np.diag(image.GetSpacing())
    matrix[:3, 3] = RAS_TO_LPS @ np.array(image.GetOrigin(), dtype=np.float64)
    return matrix


def ras_matrix_of_sitk_transform(transform) -> np.ndarray:
    """The 4x4 RAS matrix of a rigid or affine SimpleITK transform (ITK's LPS matrix with x and y flipped)."""
    from EdgeFusionLib.registration import homogeneous_matrix

    flip = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS <-> LPS, its own inverse
    return flip @ homogeneous_matrix(transform) @ flip


def sitk_image_from_volume(volume_node):
    """The node's voxels and geometry as a SimpleITK image, ignoring any parent transform."""
    return sitk_image_from_array(voxel_array(volume_node), ijk_to_ras(volume_node), number_of_components(volume_node) > 1)


def sitk_image_in_frame_of(volume_node, reference_node):
    """``volume_node`` as a SimpleITK image whose physical space is ``reference_node``'s frame.

    "Frame" is the coordinate system in which the reference's IJKToRAS matrix is
    defined, i.e. below the reference's parent transform. Parent transforms are
    hardened on a temporary copy that never enters the scene, so the input node
    and its transform are left untouched:

    * linear: only the IJK-to-RAS matrix changes, voxels are copied as they are;
    * non-linear (grid, B-spline, thin-plate): the copy is resampled on its own
      voxel grid, as Slicer's "Harden transform" does (content moved outside that
      grid is cropped).
    """
    import vtk

    import slicer

    source_parent = volume_node.GetParentTransformNode()
    target_parent = reference_node.GetParentTransformNode()
    if source_parent is target_parent:
        return sitk_image_from_volume(volume_node)

    source_to_target = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(source_parent, target_parent, source_to_target)
    linear_transform = vtk.vtkTransform()
    if slicer.vtkMRMLTransformNode.IsGeneralTransformLinear(source_to_target, linear_transform):
        hardened_ijk_to_ras = matrix_to_array(linear_transform.GetMatrix()) @ ijk_to_ras(volume_node)
        return sitk_image_from_array(voxel_array(volume_node), hardened_ijk_to_ras, number_of_components(volume_node) > 1)

    hardened_copy = volume_node.NewInstance()  # same class, not in any scene
    hardened_copy.SetIJKToRASMatrix(array_to_matrix(ijk_to_ras(volume_node)))
    image_copy = vtk.vtkImageData()
    image_copy.DeepCopy(volume_node.GetImageData())
    hardened_copy.SetAndObserveImageData(image_copy)
    hardened_copy.ApplyTransform(source_to_target)
    return sitk_image_from_volume(hardened_copy)


def world_bounds(volume_node) -> np.ndarray:
    """Axis-aligned RAS bounds ``[xmin, xmax, ymin, ymax, zmin, zmax]`` in world space (transforms applied)."""
    bounds = [0.0] * 6
    volume_node.GetRASBounds(bounds)
    return np.array(bounds, dtype=np.float64)


def colour_table(colour_node, procedural_samples: int = PROCEDURAL_COLOUR_SAMPLES) -> np.ndarray:
    """The colours a colour node assigns from the low to the high end of a display window, (K, 3) in [0, 1].

    Look-up-table nodes ("Rainbow", "Grey", ...) give their K entries. Procedural
    nodes ("PET-Heat", "PET-Rainbow2", ...) are continuous transfer functions,
    sampled at ``procedural_samples`` evenly spaced points over their range. The
    slice viewer stretches the same colours over the display window, so
    ``EdgeFusionLib.fusion.colour.apply_colour_table`` with the window as range
    reproduces what the user sees.
    """
    scalars_to_colours = colour_node.GetScalarsToColors()
    if scalars_to_colours is None:
        raise ValueError(f"colour node '{colour_node.GetName()}' has no colours")
    if scalars_to_colours.IsA("vtkLookupTable"):
        count = scalars_to_colours.GetNumberOfTableValues()
        colours = [scalars_to_colours.GetTableValue(index)[:3] for index in range(count)]
    else:
        low, high = scalars_to_colours.GetRange()
        colours = [
            scalars_to_colours.GetColor(low + (high - low) * index / (procedural_samples - 1))
            for index in range(procedural_samples)
        ]
    return np.clip(np.array(colours, dtype=np.float32), 0.0, 1.0)


def display_window(volume_node) -> tuple[float, float]:
    """The (low, high) intensity window the slice viewers use for the node.

    Nodes without a display node (created by a script) get their full intensity range.
    """
    display_node = volume_node.GetDisplayNode()
    if display_node is not None and display_node.IsA("vtkMRMLScalarVolumeDisplayNode"):
        low, high = display_node.GetWindowLevelMin(), display_node.GetWindowLevelMax()
        if high > low:
            return float(low), float(high)
    low, high = volume_node.GetImageData().GetScalarRange()
    return float(low), float(high)
