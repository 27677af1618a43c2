"""Helpers for the tests of the Slicer module: a real MRML scene set up as Slicer sets it up.

The scene, application logic, colour nodes, volumes logic and the Red/Yellow/Green
slice logics come from the ``slicer-core`` wheel (Slicer's own MRML and logic
libraries); only the Qt GUI is absent. Test files import this module (it is not a
conftest, so it cannot clash with the project's ``conftest.py``).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
MODULE_DIR = REPO / "EdgeFusion"
SLICE_VIEWS = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}
SLICE_VIEW_PIXELS = (128, 128)

if str(MODULE_DIR) not in sys.path:  # where Slicer would find EdgeFusion.py and EdgeFusionMRML
    sys.path.insert(0, str(MODULE_DIR))


@dataclasses.dataclass
class SlicerScene:
    """What a Slicer session provides to a module's logic, minus the GUI."""

    scene: object
    application_logic: object
    volumes_logic: object
    slice_logics: dict  # view name -> vtkMRMLSliceLogic
    colours_logic: object  # kept referenced: when it is deleted it removes the default colour nodes

    def node_ids(self) -> list[str]:
        """IDs of every node in the scene, in scene order."""
        return [self.scene.GetNthNode(index).GetID() for index in range(self.scene.GetNumberOfNodes())]

    def add_volume(self, array: np.ndarray, ijk_to_ras: np.ndarray | None = None, name: str = "volume",
                   class_name: str = "vtkMRMLScalarVolumeNode", display: bool = True):
        """A volume node in this scene from a [k, j, i(, c)] array (as slicer.util.addVolumeFromArray)."""
        import slicer

        from EdgeFusionMRML import volumes

        node = self.scene.AddNewNodeByClass(class_name, name)
        node.SetIJKToRASMatrix(volumes.array_to_matrix(np.eye(4) if ijk_to_ras is None else ijk_to_ras))
        slicer.util.updateVolumeFromArray(node, array)
        if display:
            node.CreateDefaultDisplayNodes()
        return node

    def colour_node(self, name: str):
        node = self.scene.GetFirstNodeByName(name)
        assert node is not None, f"Slicer's default colour node {name} is missing"
        return node


def make_slicer_scene() -> SlicerScene:
    """A new scene with Slicer's default colour nodes and Red/Yellow/Green slice views' logics.

    Also makes it ``slicer.mrmlScene``, which ``slicer.util`` functions use.
    """
    import vtk

    import slicer

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    application_logic = slicer.vtkSlicerApplicationLogic()
    application_logic.SetMRMLScene(scene)
    application_logic.GetColorLogic().SetMRMLScene(scene)
    application_logic.GetColorLogic().AddDefaultColorNodes()  # "Grey", "PET-Heat", "Rainbow", ...
    # The Volumes logic looks up the "Colors" module logic to give loaded volumes their default colours.
    colours_module_logic = slicer.vtkMRMLColorLogic()
    colours_module_logic.SetMRMLScene(scene)
    colours_module_logic.SetMRMLApplicationLogic(application_logic)
    application_logic.SetModuleLogic("Colors", colours_module_logic)
    application_logic.SetSliceLogics(vtk.vtkCollection())
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene, True)

    volumes_logic = slicer.vtkSlicerVolumesLogic()
    volumes_logic.SetMRMLScene(scene)
    volumes_logic.SetMRMLApplicationLogic(application_logic)

    slice_logics = {}
    for view_name, orientation in SLICE_VIEWS.items():
        slice_logic = slicer.vtkMRMLSliceLogic()
        slice_logic.SetMRMLApplicationLogic(application_logic)
        slice_logic.SetMRMLScene(scene)
        slice_node = slice_logic.AddSliceNode(view_name)
        slice_node.SetOrientation(orientation)
        slice_logic.ResizeSliceNode(*SLICE_VIEW_PIXELS)
        application_logic.GetSliceLogics().AddItem(slice_logic)
        slice_logics[view_name] = slice_logic
    return SlicerScene(scene, application_logic, volumes_logic, slice_logics, colours_module_logic)


def blended_slice_image(slice_logic) -> np.ndarray:
    """The RGBA image a slice view shows (all layers blended by Slicer's slice pipeline), [row, column, 4] uint8.

    Row 0 is the bottom of the view (VTK image order).
    """
    from vtk.util import numpy_support

    producer = slice_logic.GetImageDataConnection().GetProducer()
    producer.Update()
    image = producer.GetOutputDataObject(0)
    columns, rows, _ = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(rows, columns, -1).copy()


def volume_state(node) -> tuple:
    """Voxels, geometry and parent transform of a node, to check that a run left it untouched."""
    import slicer

    from EdgeFusionMRML import volumes

    return (
        np.array(slicer.util.arrayFromVolume(node), copy=True),
        volumes.ijk_to_ras(node),
        node.GetTransformNodeID(),
        node.GetName(),
    )


def assert_volume_unchanged(node, state_before: tuple) -> None:
    voxels, ijk_to_ras, transform_id, name = volume_state(node)
    np.testing.assert_array_equal(voxels, state_before[0])
    np.testing.assert_array_equal(ijk_to_ras, state_before[1])
    assert (transform_id, name) == state_before[2:]


# Fixtures shared by the test files (imported there by name; the project's conftest.py is not ours).


@pytest.fixture
def app() -> SlicerScene:
    """A fresh Slicer-like scene for each test."""
    return make_slicer_scene()


@pytest.fixture
def logic(app):
    """The module's logic working in ``app``'s scene and fitting its slice views."""
    from EdgeFusionMRML.logic import VolumeFusionLogic

    return VolumeFusionLogic(app.scene, app.application_logic)
