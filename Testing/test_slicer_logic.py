"""The EdgeFusion module's logic on a real vtkMRMLScene (Slicer's MRML libraries from ``slicer-core``).

Inputs are the sample phantoms, loaded with Slicer's own volume reader. Expected
results come from ``EdgeFusionLib.fusion.pipeline.fuse_images`` on the same files read by
SimpleITK, so every test also checks the RAS/LPS geometry conversion and the
transform hardening of the module against an independent path. Pixel rules are
used (no trained weights needed); one test runs the network with a random model.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="Slicer's MRML libraries (pip install slicer-core) are not installed")

from edgefusion_slicer_support import (  # noqa: E402  (needs slicer)
    MODULE_DIR,
    REPO,
    app,  # noqa: F401  (pytest fixture)
    assert_volume_unchanged,
    logic,  # noqa: F401  (pytest fixture)
    volume_state,
)

from EdgeFusionMRML import sampledata, volumes  # noqa: E402
from EdgeFusionMRML.logic import VolumeFusionLogic  # noqa: E402


def load(app, name):
    return sampledata.load_sample_volume(name, app.volumes_logic)


def read_sample(name):
    import SimpleITK as sitk

    return sitk.ReadImage(str(sampledata.sample_file(name)))


def fuse_files(mri_name, other_name, modality, **options):
    """Reference result: EdgeFusionLib on the sample files as SimpleITK reads them (no Slicer involved)."""
    import SimpleITK as sitk

    from EdgeFusionLib.fusion.pipeline import fuse_images

    other = options.pop("other_image", None) or read_sample(other_name)
    return sitk.GetArrayFromImage(fuse_images(read_sample(mri_name), other, modality, **options))


def transformed_lps_image(image, ras_matrix: np.ndarray):
    """A copy of a SimpleITK image moved by a 4x4 RAS transform (what a parent transform does in Slicer)."""
    flip = volumes.RAS_TO_LPS
    rotation_lps = flip @ ras_matrix[:3, :3] @ flip
    moved = type(image)(image)
    moved.SetOrigin((rotation_lps @ np.array(image.GetOrigin()) + flip @ ras_matrix[:3, 3]).tolist())
    moved.SetDirection((rotation_lps @ np.array(image.GetDirection()).reshape(3, 3)).ravel().tolist())
    return moved


def rotation_about_s(degrees: float, translation_ras=(0.0, 0.0, 0.0)) -> np.ndarray:
    angle = np.deg2rad(degrees)
    matrix = np.eye(4)
    matrix[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    matrix[:3, 3] = translation_ras
    return matrix


# ---------------------------------------------------------------- geometry


def test_ct_on_another_grid_gives_a_scalar_volume_with_the_mri_geometry(app, logic):
    mri, ct = load(app, "EdgeFusionPhantom-MRI"), load(app, "EdgeFusionPhantom-CT")
    assert not np.allclose(volumes.ijk_to_ras(ct), volumes.ijk_to_ras(mri)), "the CT phantom must need resampling"
    mri_before, ct_before = volume_state(mri), volume_state(ct)

    fused = logic.fuse(mri, ct, "ct", method="pixel-average")

    assert fused.GetClassName() == "vtkMRMLScalarVolumeNode"
    assert fused.GetScene() is app.scene
    assert fused.GetName() == "EdgeFusionPhantom-MRI + EdgeFusionPhantom-CT fused"
    np.testing.assert_array_equal(volumes.ijk_to_ras(fused), volumes.ijk_to_ras(mri))
    assert fused.GetImageData().GetDimensions() == mri.GetImageData().GetDimensions()
    values = slicer.util.arrayFromVolume(fused)
    assert values.dtype == np.float32 and 0.0 <= values.min() and values.max() <= 1.0
    np.testing.assert_allclose(values, fuse_files("EdgeFusionPhantom-MRI", "EdgeFusionPhantom-CT", "ct", method="pixel-average"), atol=1e-6)
    display = fused.GetDisplayNode()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0)
    assert fused.GetAttribute("EdgeFusion.Method") == "pixel-average"
    assert fused.GetAttribute("EdgeFusion.Modality") == "CT"
    assert_volume_unchanged(mri, mri_before)
    assert_volume_unchanged(ct, ct_before)


def test_linear_parent_transform_is_hardened_on_a_copy(app, logic):
    mri, ct = load(app, "EdgeFusionPhantom-MRI"), load(app, "EdgeFusionPhantom-CT")
    motion = rotation_about_s(5.0, (4.0, -6.0, 3.0))
    transform = app.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "CT to MRI")
    transform.SetMatrixTransformToParent(volumes.array_to_matrix(motion))
    ct.SetAndObserveTransformNodeID(transform.GetID())
    ct_before = volume_state(ct)

    fused = logic.fuse(mri, ct, "ct", method="pixel-average")

    expected = fuse_files("EdgeFusionPhantom-MRI", None, "ct", method="pixel-average",
                          other_image=transformed_lps_image(read_sample("EdgeFusionPhantom-CT"), motion))
    np.testing.assert_allclose(slicer.util.arrayFromVolume(fused), expected, atol=1e-5)
    without_transform = fuse_files("EdgeFusionPhantom-MRI", "EdgeFusionPhantom-CT", "ct", method="pixel-average")
    assert np.abs(slicer.util.arrayFromVolume(fused) - without_transform).max() > 0.1, "the transform must matter"
    assert_volume_unchanged(ct, ct_before)
    assert ct.GetTransformNodeID() == transform.GetID()


def test_output_follows_the_mri_parent_transform(app, logic):
    """Both under the same transform: nothing is resampled, and the result moves with the MRI."""
    mri, ct = load(app, "EdgeFusionPhantom-MRI"), load(app, "EdgeFusionPhantom-CT")
    transform = app.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform.SetMatrixTransformToParent(volumes.array_to_matrix(rotation_about_s(-10.0, (20.0, 0.0, 0.0))))
    mri.SetAndObserveTransformNodeID(transform.GetID())
    ct.SetAndObserveTransformNodeID(transform.GetID())

    fused = logic.fuse(mri, ct, "ct", method="pixel-average")

    assert fused.GetTransformNodeID() == transform.GetID()
    np.testing.assert_allclose(slicer.util.arrayFromVolume(fused), fuse_files("EdgeFusionPhantom-MRI", "EdgeFusionPhantom-CT", "ct", method="pixel-average"), atol=1e-6)


def test_non_linear_parent_transform_is_hardened_like_the_linear_one(app, logic):
    """A grid transform that shifts everything by 5 mm gives (inside the head) the result of a 5 mm translation."""
    from vtk.util import numpy_support

    import vtk

    mri, ct = load(app, "EdgeFusionPhantom-MRI"), load(app, "EdgeFusionPhantom-CT")
    shift_ras = np.array([5.0, 0.0, 0.0])
    linear = app.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    linear.SetMatrixTransformToParent(volumes.array_to_matrix(rotation_about_s(0.0, shift_ras)))
    ct.SetAndObserveTransformNodeID(linear.GetID())
    by_translation = slicer.util.arrayFromVolume(logic.fuse(mri, ct, "ct", method="pixel-average")).copy()

    grid = vtk.vtkImageData()
    grid.SetOrigin(-150.0, -150.0, -150.0)
    grid.SetSpacing(50.0, 50.0, 50.0)
    grid.SetDimensions(7, 7, 7)
    grid.AllocateScalars(vtk.VTK_DOUBLE, 3)
    numpy_support.vtk_to_numpy(grid.GetPointData().GetScalars())[:] = -shift_ras  # from-parent displacement
    grid_transform = slicer.vtkOrientedGridTransform()
    grid_transform.SetDisplacementGridData(grid)
    grid_node = app.scene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    grid_node.SetAndObserveTransformFromParent(grid_transform)
    ct.SetAndObserveTransformNodeID(grid_node.GetID())
    ct_before = volume_state(ct)

    by_grid = slicer.util.arrayFromVolume(logic.fuse(mri, ct, "ct", method="pixel-average"))

    head = slicer.util.arrayFromVolume(mri) > 100
    assert np.abs(by_grid[head] - by_translation[head]).mean() < 0.01
    assert_volume_unchanged(ct, ct_before)


# ---------------------------------------------------------------- colour


@pytest.mark.parametrize("colour_name", ["PET-Heat", "Rainbow"])
def test_colour_table_reproduces_what_the_slice_viewer_shows(app, colour_name):
    """colour_table + display_window map values the way Slicer's volume display pipeline does."""
    from vtk.util import numpy_support

    from EdgeFusionLib.fusion.colour import apply_colour_table

    values = np.linspace(-100.0, 1100.0, 2401, dtype=np.float32).reshape(1, 1, -1)
    node = app.add_volume(values, name="ramp")
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(app.colour_node(colour_name).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1000.0)
    producer = display.GetOutputImageDataConnection().GetProducer()
    producer.Update()
    shown = numpy_support.vtk_to_numpy(producer.GetOutputDataObject(0).GetPointData().GetScalars())[:, :3].astype(float)

    low, high = volumes.display_window(node)
    assert (low, high) == (0.0, 1000.0)
    ours = apply_colour_table((values.ravel() - low) / (high - low), volumes.colour_table(app.colour_node(colour_name))) * 255

    errors = np.abs(ours - shown)
    assert errors.mean() < 1.5  # grey levels out of 255
    assert np.percentile(errors, 99) < 12  # rounding at the steepest steps of the map


def test_scalar_spect_with_colour_table_gives_an_rgb_vector_volume(app, logic):
    mri, spect = load(app, "EdgeFusionPhantom-MRI"), load(app, "EdgeFusionPhantom-SPECT")
    heat = app.colour_node("PET-Heat")
    display = spect.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 600.0)
    spect_before = volume_state(spect)

    fused = logic.fuse(mri, spect, "spect", method="pixel-average", colour_node=heat)

    assert fused.GetClassName() == "vtkMRMLVectorVolumeNode"
    image = fused.GetImageData()
    assert (image.GetNumberOfScalarComponents(), image.GetScalarTypeAsString()) == (3, "unsigned char")
    np.testing.assert_array_equal(volumes.ijk_to_ras(fused), volumes.ijk_to_ras(mri))
    rgb = slicer.util.arrayFromVolume(fused)
    expected = fuse_files("EdgeFusionPhantom-MRI", "EdgeFusionPhantom-SPECT", "spect", method="pixel-average",
                          colour_table=volumes.colour_table(heat), colour_range=(0.0, 600.0))
    assert np.abs(rgb.astype(int) - expected.astype(int)).max() <= 1
    # The SPECT's colours survive: where it is hot, the fused voxels are red/yellow, not grey.
    import SimpleITK as sitk

    counts = sitk.GetArrayFromImage(sitk.Resample(read_sample("EdgeFusionPhantom-SPECT"), read_sample("EdgeFusionPhantom-MRI")))
    hot = counts > 0.6 * counts.max()
    assert hot.sum() > 100
    assert (rgb[hot, 0].astype(int) - rgb[hot, 2].astype(int)).mean() > 60
    assert fused.GetAttribute("EdgeFusion.ColourTable") == "PET-Heat"
    assert_volume_unchanged(spect, spect_before)


def test_spect_uses_its_display_colour_table_by_default(app, logic):
    mri, spect = load(app, "EdgeFusionPhantom-MRI"), load(app, "EdgeFusionPhantom-SPECT")
    spect.GetDisplayNode().SetAndObserveColorNodeID(app.colour_node("Rainbow").GetID())
    job = logic.prepare(mri, spect, "SPECT", method="pixel-average")
    assert job.colour_name == "Rainbow"
    np.testing.assert_array_equal(job.options.colour_table, volumes.colour_table(app.colour_node("Rainbow")))
    assert job.options.colour_range == volumes.display_window(spect)


def test_a_spect_shown_in_grey_is_fused_through_pet_heat_not_grey(app, logic):
    """Through Grey the fusion would carry no colour; the panel preselects the same table (fusion_colour_node)."""
    mri, spect = load(app, "EdgeFusionPhantom-MRI"), load(app, "EdgeFusionPhantom-SPECT")
    spect.GetDisplayNode().SetAndObserveColorNodeID(app.colour_node("Grey").GetID())
    job = logic.prepare(mri, spect, "SPECT", method="pixel-average")
    assert job.colour_name == "PET-Heat" == logic.fusion_colour_node(spect).GetName()
    np.testing.assert_array_equal(job.options.colour_table, volumes.colour_table(app.colour_node("PET-Heat")))


def test_rgb_spect_volume_is_fused_as_colour(app, logic):
    """An RGB SPECT (e.g. an exported screenshot) keeps its colours without a colour table."""
    import SimpleITK as sitk

    from EdgeFusionLib.fusion.colour import apply_colour_table

    mri = load(app, "EdgeFusionPhantom-MRI")
    spect_image = read_sample("EdgeFusionPhantom-SPECT")
    counts = sitk.GetArrayFromImage(spect_image).astype(np.float32)
    rgb = np.rint(apply_colour_table(counts / counts.max(), volumes.colour_table(app.colour_node("PET-Heat"))) * 255).astype(np.uint8)
    rgb_image = sitk.GetImageFromArray(rgb, isVector=True)
    rgb_image.CopyInformation(spect_image)
    spect_rgb = app.add_volume(rgb, volumes.ijk_to_ras_from_sitk(spect_image), "SPECT RGB", "vtkMRMLVectorVolumeNode")

    fused = logic.fuse(mri, spect_rgb, "spect", method="pixel-average")

    assert fused.GetClassName() == "vtkMRMLVectorVolumeNode"
    expected = fuse_files("EdgeFusionPhantom-MRI", None, "spect", method="pixel-average", other_image=rgb_image)
    assert np.abs(slicer.util.arrayFromVolume(fused).astype(int) - expected.astype(int)).max() <= 1


# ---------------------------------------------------------------- scene bookkeeping


def test_output_is_placed_in_the_mri_study(app, logic):
    mri, ct = load(app, "EdgeFusionPhantom-MRI"), load(app, "EdgeFusionPhantom-CT")
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(app.scene)
    patient = hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Phantom patient")
    study = hierarchy.CreateStudyItem(patient, "Head study")
    hierarchy.CreateItem(study, mri)
    hierarchy.CreateItem(hierarchy.CreateStudyItem(patient, "Other study"), ct)

    fused = logic.fuse(mri, ct, "ct", method="pixel-average")

    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(fused)) == study


def test_existing_output_volume_is_overwritten_in_place(app, logic):
    mri, spect = load(app, "EdgeFusionPhantom-MRI"), load(app, "EdgeFusionPhantom-SPECT")
    output = app.add_volume(np.zeros((2, 2, 2, 3), np.uint8), name="my result", class_name="vtkMRMLVectorVolumeNode")
    volume_count = app.scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode")

    fused = logic.fuse(mri, spect, "spect", method="pixel-average", colour_node=app.colour_node("PET-Heat"), output_node=output)

    assert fused is output and fused.GetName() == "my result"
    assert app.scene.GetNumberOfNodesByClass("vtkMRMLVolumeNode") == volume_count
    assert fused.GetImageData().GetDimensions() == mri.GetImageData().GetDimensions()
    np.testing.assert_array_equal(volumes.ijk_to_ras(fused), volumes.ijk_to_ras(mri))


def test_cancel_leaves_the_scene_exactly_as_before(app, logic):
    from EdgeFusionLib.errors import FusionCancelled

    mri, ct = load(app, "EdgeFusionPhantom-MRI"), load(app, "EdgeFusionPhantom-CT")
    output = app.add_volume(np.full((3, 4, 5), 7.0, np.float32), name="previous result")
    states = [volume_state(node) for node in (mri, ct, output)]
    ids_before = app.node_ids()
    progress = []

    with pytest.raises(FusionCancelled):
        logic.fuse(mri, ct, "ct", method="pixel-average", output_node=output,
                   progress=lambda done, total: progress.append(done), cancel=lambda: len(progress) >= 3)

    assert progress == [1, 2, 3]  # it really started, then stopped at the next batch
    assert app.node_ids() == ids_before
    for node, state in zip((mri, ct, output), states):
        assert_volume_unchanged(node, state)


def test_failure_while_adding_the_result_removes_it_again(app, logic, monkeypatch):
    mri, ct = load(app, "EdgeFusionPhantom-MRI"), load(app, "EdgeFusionPhantom-CT")
    ids_before = app.node_ids()

    def broken_hierarchy(*args):
        raise RuntimeError("subject hierarchy unavailable")

    monkeypatch.setattr(VolumeFusionLogic, "_place_beside", broken_hierarchy)
    with pytest.raises(RuntimeError, match="subject hierarchy"):
        logic.fuse(mri, ct, "ct", method="pixel-average")
    assert app.node_ids() == ids_before


def _display_state(node):
    display = node.GetDisplayNode()
    return display and (display.GetWindow(), display.GetLevel(), display.GetAutoWindowLevel())


@pytest.mark.parametrize("displayed", [True, False], ids=["with display node", "without display node"])
def test_failure_while_writing_an_existing_output_leaves_it_as_it_was(app, logic, monkeypatch, displayed):
    mri, ct = load(app, "EdgeFusionPhantom-MRI"), load(app, "EdgeFusionPhantom-CT")
    output = app.add_volume(np.arange(60, dtype=np.float32).reshape(3, 4, 5), np.diag([2.0, 3.0, 4.0, 1.0]), "previous result", display=displayed)
    output.SetAttribute("EdgeFusion.Method", "previous method")
    output.SetAttribute("Note", "kept")
    moved = app.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "output placement")
    output.SetAndObserveTransformNodeID(moved.GetID())
    if displayed:
        output.GetDisplayNode().AutoWindowLevelOff()
        output.GetDisplayNode().SetWindowLevel(20.0, 30.0)
    state, attributes, display = volume_state(output), {name: output.GetAttribute(name) for name in output.GetAttributeNames()}, _display_state(output)
    ids_before = app.node_ids()

    def broken_hierarchy(*args):
        raise RuntimeError("subject hierarchy unavailable")

    monkeypatch.setattr(VolumeFusionLogic, "_place_beside", broken_hierarchy)
    with pytest.raises(RuntimeError, match="subject hierarchy"):
        logic.fuse(mri, ct, "ct", method="pixel-average", output_node=output)

    assert app.node_ids() == ids_before
    assert_volume_unchanged(output, state)
    assert {name: output.GetAttribute(name) for name in output.GetAttributeNames()} == attributes
    assert _display_state(output) == display


# ---------------------------------------------------------------- bad inputs


def _bad_inputs(app, case):
    """(mri, other, modality, output) for each way of getting the inputs wrong."""
    mri = load(app, "EdgeFusionPhantom-MRI")
    ct = load(app, "EdgeFusionPhantom-CT")
    if case == "nothing selected":
        return None, None, "ct", None
    if case == "no second volume":
        return mri, None, "ct", None
    if case == "same volume twice":
        return mri, mri, "ct", None
    if case == "label map":
        labels = app.add_volume(np.ones((4, 4, 4), np.int16), volumes.ijk_to_ras(mri), "segmentation", "vtkMRMLLabelMapVolumeNode")
        return mri, labels, "ct", None
    if case == "vector MRI":
        rgb_mri = app.add_volume(np.ones((4, 4, 4, 3), np.uint8), volumes.ijk_to_ras(mri), "MRI screenshot", "vtkMRMLVectorVolumeNode")
        return rgb_mri, ct, "ct", None
    if case == "non-overlapping":
        far_away = volumes.ijk_to_ras(ct)
        far_away[:3, 3] += [0.0, 0.0, 2000.0]
        return mri, app.add_volume(np.ones((4, 4, 4), np.int16), far_away, "CT of another patient"), "ct", None
    if case == "empty volume":
        empty = app.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty CT")
        return mri, empty, "ct", None
    if case == "image without voxel values":
        import vtk

        no_scalars = app.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT without scalars")
        image = vtk.vtkImageData()
        image.SetDimensions(4, 4, 4)  # voxels, but no values allocated
        no_scalars.SetAndObserveImageData(image)
        return mri, no_scalars, "ct", None
    if case == "unknown modality":
        return mri, ct, "ultrasound", None
    if case == "output is an input":
        return mri, ct, "ct", ct
    if case == "grey output for SPECT":
        return mri, ct, "spect", app.add_volume(np.zeros((2, 2, 2), np.float32), name="grey output")
    raise AssertionError(case)


BAD_INPUTS = {
    "nothing selected": "Select an MRI volume",
    "no second volume": "Select a CT, SPECT or PET volume",
    "same volume twice": "same volume",
    "label map": "label map",
    "vector MRI": "3 values per voxel",
    "non-overlapping": "do not overlap",
    "empty volume": "empty",
    "image without voxel values": "The CT 'CT without scalars' is empty",
    "unknown modality": "modality",
    "output is an input": "must not be one of the inputs",
    "grey output for SPECT": "RGB volume",
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_give_a_clear_message_and_create_no_node(app, logic, case):
    from EdgeFusionLib.errors import InputError

    mri, other, modality, output = _bad_inputs(app, case)
    ids_before = app.node_ids()

    message = logic.validate_inputs(mri, other, modality, output)
    assert message is not None and BAD_INPUTS[case] in message
    assert "\n" not in message and len(message) < 200
    with pytest.raises(InputError) as raised:
        logic.fuse(mri, other, modality, method="pixel-average", output_node=output)
    assert str(raised.value) == message
    assert app.node_ids() == ids_before


def test_valid_inputs_give_no_message(app, logic):
    mri, ct = load(app, "EdgeFusionPhantom-MRI"), load(app, "EdgeFusionPhantom-CT")
    assert logic.validate_inputs(mri, ct, "CT") is None


@pytest.mark.parametrize(
    "case, expected",
    [
        ("NaN in the MRI", "The MRI 'MRI with NaN' contains NaN or infinite values."),
        ("constant CT", "The CT 'flat CT' is constant"),
    ],
    ids=["NaN in the MRI", "constant CT"],
)
def test_unusable_voxel_values_are_refused_before_the_fusion_naming_the_volume(app, logic, case, expected):
    from EdgeFusionLib.errors import InputError

    mri, ct = load(app, "EdgeFusionPhantom-MRI"), load(app, "EdgeFusionPhantom-CT")
    if case == "NaN in the MRI":
        voxels = slicer.util.arrayFromVolume(mri).astype(np.float32)
        voxels[5, 5, 5] = np.nan
        mri = app.add_volume(voxels, volumes.ijk_to_ras(mri), "MRI with NaN")
    else:
        ct = app.add_volume(np.full(slicer.util.arrayFromVolume(ct).shape, 40.0, np.float32), volumes.ijk_to_ras(ct), "flat CT")
    ids_before = app.node_ids()

    assert logic.validate_inputs(mri, ct, "ct") is None  # it reads no voxel: prepare finds these
    with pytest.raises(InputError) as raised:
        logic.prepare(mri, ct, "ct", method="pixel-average")
    assert str(raised.value).startswith(expected)
    assert app.node_ids() == ids_before


def set_dicom_modality(app, node, code):
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(app.scene)
    item = hierarchy.GetItemByDataNode(node) or hierarchy.CreateItem(hierarchy.GetSceneItemID(), node)
    hierarchy.SetItemAttribute(item, slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMSeriesModalityAttributeName(), code)


@pytest.mark.parametrize(
    "mri_code, other_code, modality, expected",
    [
        ("CT", "", "ct", "The MRI 'EdgeFusionPhantom-MRI' is a CT series (DICOM Modality CT); select an MR series"),
        ("PT", "CT", "ct", "The MRI 'EdgeFusionPhantom-MRI' is a PET series"),
        ("MR", "MR", "ct", "The CT 'EdgeFusionPhantom-CT' is an MR series (DICOM Modality MR)"),
        ("MR", "NM", "ct", "'EdgeFusionPhantom-CT' is a SPECT series (DICOM Modality NM), not CT; choose SPECT"),
        ("", "CT", "pet", "'EdgeFusionPhantom-CT' is a CT series (DICOM Modality CT), not PET; choose CT"),
        # Accepted: tags that agree, tags that say nothing about the slot, and names (only hints).
        ("MR", "CT", "ct", None),
        ("OT", "", "ct", None),
        ("", "", "spect", None),  # 'EdgeFusionPhantom-CT' as SPECT: its name is no reason to refuse
    ],
)
def test_dicom_modality_contradicting_the_inputs_is_refused(app, logic, mri_code, other_code, modality, expected):
    from EdgeFusionLib.errors import InputError

    mri, other = load(app, "EdgeFusionPhantom-MRI"), load(app, "EdgeFusionPhantom-CT")
    set_dicom_modality(app, mri, mri_code)
    set_dicom_modality(app, other, other_code)

    message = logic.validate_inputs(mri, other, modality)
    if expected is None:
        assert message is None
        return
    assert message is not None and message.startswith(expected), message
    with pytest.raises(InputError, match="DICOM Modality"):
        logic.prepare(mri, other, modality)


# ---------------------------------------------------------------- guesses and planes


@pytest.mark.parametrize(
    "name, expected",
    [
        ("CTChest", "ct"),
        ("head CT 2mm", "ct"),
        ("EdgeFusionPhantom-CT", "ct"),
        ("brain_SPECT_HMPAO", "spect"),
        ("NM Tc99m ECD", "spect"),
        ("FDG-PET", "pet"),
        ("Amyloid PET WB", "pet"),
        ("T1 MPRAGE", None),
        ("MR perfusion DSC", None),
        ("pt 12 FLAIR", None),
        ("spectacle frame", None),
    ],
)
def test_modality_is_guessed_from_the_name(app, logic, name, expected):
    guess = logic.guess_modality(app.add_volume(np.zeros((2, 2, 2), np.float32), name=name))
    assert (guess.modality.name if guess.modality else None) == expected
    assert name in guess.reason  # the panel tells the user what the guess rests on


def test_dicom_modality_wins_over_the_name(app, logic):
    node = app.add_volume(np.zeros((2, 2, 2), np.float32), name="Series 3: CT attenuation")
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(app.scene)
    item = hierarchy.CreateItem(hierarchy.GetSceneItemID(), node)
    hierarchy.SetItemAttribute(item, slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMSeriesModalityAttributeName(), "PT")
    guess = logic.guess_modality(node)
    assert guess.modality.name == "pet" and "DICOM Modality is PT" in guess.reason


def test_a_name_that_points_to_two_modalities_gives_no_guess(app, logic):
    """The same rule as the command line, which refuses such a name: the panel asks the user instead."""
    guess = logic.guess_modality(app.add_volume(np.zeros((2, 2, 2), np.float32), name="SPECT vs PET comparison"))
    assert guess.modality is None and "SPECT and PET" in guess.reason


def test_anatomical_planes_map_to_array_axes(app, logic):
    axial_mri = app.add_volume(np.zeros((4, 5, 6), np.float32), np.diag([1.0, 1.0, 5.0, 1.0]))
    assert [logic.axis_for_plane(axial_mri, plane) for plane in ("axial", "coronal", "sagittal")] == [0, 1, 2]
    # Sagittal acquisition: i runs anterior-posterior, j superior-inferior, k left-right.
    sagittal = np.zeros((4, 4))
    sagittal[:3, :3] = [[0, 0, 1.2], [-1, 0, 0], [0, -1, 0]]
    sagittal[3, 3] = 1
    sagittal_mri = app.add_volume(np.zeros((4, 5, 6), np.float32), sagittal)
    assert logic.axis_for_plane(sagittal_mri, "sagittal") == 0
    assert logic.axis_for_plane(sagittal_mri, "axial") == 1
    assert logic.axis_for_plane(sagittal_mri, "coronal") == 2
    assert logic.plane_of_axis(sagittal_mri, 0) == "sagittal"
    assert logic.axis_for_plane(sagittal_mri, "auto") is None


def test_chosen_plane_slices_the_volume_along_that_axis(app, logic):
    """With the phantom's MRI, axial slices are the 24 thick ones and coronal slices the 96 rows."""
    mri, ct = load(app, "EdgeFusionPhantom-MRI"), load(app, "EdgeFusionPhantom-CT")
    totals = {}
    for plane in ("auto", "coronal"):
        seen = []
        logic.fuse(mri, ct, "ct", method="pixel-average", axis=logic.axis_for_plane(mri, plane),
                   progress=lambda done, total: seen.append(total))
        totals[plane] = seen[-1]
    assert totals == {"auto": 24, "coronal": 96}


# ---------------------------------------------------------------- network, reloading


def test_network_fusion_with_a_small_random_model(app, logic, random_model):
    """The EH-DRAN path end to end on a tiny volume (untrained weights: only shapes and ranges are checked)."""
    import SimpleITK as sitk

    from EdgeFusionLib.fusion.pipeline import fuse_images

    rng = np.random.default_rng(0)
    ijk_to_ras = np.diag([2.0, 2.0, 4.0, 1.0])
    mri = app.add_volume(rng.uniform(0, 500, (2, 16, 18)).astype(np.float32), ijk_to_ras, "MRI")
    ct = app.add_volume(rng.uniform(-1000, 1000, (3, 20, 20)).astype(np.int16), np.diag([1.8, 1.8, 3.0, 1.0]), "CT")

    fused = logic.fuse(mri, ct, "ct", model=random_model)

    values = slicer.util.arrayFromVolume(fused)
    assert values.shape == (2, 16, 18) and 0.0 <= values.min() and values.max() <= 1.0
    assert fused.GetAttribute("EdgeFusion.Method") == "default"
    job = logic.prepare(mri, ct, "ct")
    expected = sitk.GetArrayFromImage(fuse_images(job.mri_image, job.other_image, "ct", model=random_model))
    np.testing.assert_allclose(values, expected, atol=1e-6)


def test_modules_reload_with_importlib_and_still_fuse():
    """Run in a separate interpreter: reloading in this one would swap classes under other tests."""
    script = f"""
import sys
sys.path[:0] = [{str(MODULE_DIR)!r}, {str(REPO / 'Testing')!r}, {str(REPO)!r}]
from edgefusion_slicer_support import make_slicer_scene
from EdgeFusionMRML import environment, sampledata
import EdgeFusionLib.fusion.pipeline, EdgeFusionMRML.logic
app = make_slicer_scene()
mri = sampledata.load_sample_volume("EdgeFusionPhantom-MRI", app.volumes_logic)
ct = sampledata.load_sample_volume("EdgeFusionPhantom-CT", app.volumes_logic)
reloaded = environment.reload_edgefusion_modules()
assert "EdgeFusionLib.fusion.pipeline" in reloaded and "EdgeFusionMRML.logic" in reloaded, reloaded
from EdgeFusionMRML.logic import VolumeFusionLogic
fused = VolumeFusionLogic(app.scene).fuse(mri, ct, "ct", method="pixel-max")
import EdgeFusionLib.errors
try:
    VolumeFusionLogic(app.scene).fuse(mri, mri, "ct")
except EdgeFusionLib.errors.InputError as error:
    print("reloaded InputError caught:", error)
print("OK", fused.GetName())
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reloaded InputError caught" in result.stdout and "OK" in result.stdout
