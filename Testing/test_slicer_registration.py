"""'Align to the MRI first' in the Slicer module: registration on a real vtkMRMLScene (slicer-core).

The phantom CT is given a scanner frame of its own (its IJK-to-RAS moved by a known rigid motion),
so that, placed by its header, it no longer lines up with the MRI. Aligning must find that motion,
add it as a linear transform node with a copy of the CT under it, leave the inputs untouched, and
leave the scene as it was when it is refused or cancelled.
"""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="Slicer's MRML libraries (pip install slicer-core) are not installed")

from edgefusion_slicer_support import (  # noqa: E402  (needs slicer)
    app,  # noqa: F401  (pytest fixture)
    assert_volume_unchanged,
    logic,  # noqa: F401  (pytest fixture)
    volume_state,
)

from EdgeFusionMRML import sampledata, volumes  # noqa: E402

#: The known misplacement: 6 degrees about the superior axis, then (7, -5, 4) mm, in RAS.
MISPLACEMENT_DEGREES = 6.0
MISPLACEMENT_MM = (7.0, -5.0, 4.0)


def misplacement() -> np.ndarray:
    angle = np.radians(MISPLACEMENT_DEGREES)
    matrix = np.eye(4)
    matrix[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    matrix[:3, 3] = MISPLACEMENT_MM
    return matrix


def misplaced_ct(app):
    """The phantom CT as a new node whose header places it ``misplacement()`` away from the MRI."""
    ct = sampledata.load_sample_volume("EdgeFusionPhantom-CT", app.volumes_logic)
    moved = app.add_volume(slicer.util.arrayFromVolume(ct).copy(), misplacement() @ volumes.ijk_to_ras(ct), "scanner CT")
    app.scene.RemoveNode(ct)
    return moved


def residual(transform_node, points_ras: np.ndarray) -> np.ndarray:
    """Distances (mm) between where the found transform and the true one put each point of the CT."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    transform_node.GetMatrixTransformToParent(matrix)
    found = volumes.matrix_to_array(matrix)
    homogeneous = np.c_[points_ras, np.ones(len(points_ras))]
    # The CT's true place of a point p of the misplaced CT is misplacement()^-1 p.
    truth = (np.linalg.inv(misplacement()) @ homogeneous.T).T
    return np.linalg.norm((found @ homogeneous.T).T[:, :3] - truth[:, :3], axis=1)


def head_points(node) -> np.ndarray:
    """RAS centres of the node's head voxels (above a tenth of its maximum), every 7th one."""
    voxels = slicer.util.arrayFromVolume(node)
    kji = np.argwhere(voxels > 0.1 * voxels.max())[::7]
    ijk1 = np.c_[kji[:, ::-1], np.ones(len(kji))]
    return (volumes.ijk_to_ras(node) @ ijk1.T).T[:, :3]


def test_alignment_finds_the_misplacement_and_adds_it_as_a_transform_with_a_copy(app, logic):
    mri = sampledata.load_sample_volume("EdgeFusionPhantom-MRI", app.volumes_logic)
    ct = misplaced_ct(app)
    before_mri, before_ct = volume_state(mri), volume_state(ct)

    fused = logic.fuse(mri, ct, "ct", method="pixel-max", registration="rigid")

    assert_volume_unchanged(mri, before_mri)
    assert_volume_unchanged(ct, before_ct)
    transform_nodes = [node for node in slicer.util.getNodesByClass("vtkMRMLLinearTransformNode") if "(registration)" in node.GetName()]
    assert [node.GetName() for node in transform_nodes] == ["scanner CT to EdgeFusionPhantom-MRI (registration)"]
    transform = transform_nodes[0]
    # Over the head, the found motion undoes the true one: on average well under the MRI's 2 mm pixels, at
    # worst under its 5 mm slices (the phantom's edges are all the structure there is to register).
    errors = residual(transform, head_points(mri))
    print(f"target registration error over the head: mean {errors.mean():.2f} mm, max {errors.max():.2f} mm")
    assert errors.mean() < 1.0 and errors.max() < 2.5
    copy = slicer.util.getNode("scanner CT (aligned)")
    assert copy.GetTransformNodeID() == transform.GetID()
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(copy), before_ct[0])
    np.testing.assert_allclose(volumes.ijk_to_ras(copy), before_ct[1], atol=1e-9)
    assert fused.GetAttribute("EdgeFusion.Registration").startswith("rigid")
    assert fused.GetAttribute("EdgeFusion.RegistrationTransform") == transform.GetName()

    # The fusion used the aligned CT: it matches the fusion of the CT where it belongs, not of the misplaced one.
    ct_in_place = sampledata.load_sample_volume("EdgeFusionPhantom-CT", app.volumes_logic)
    reference = slicer.util.arrayFromVolume(logic.fuse(mri, ct_in_place, "ct", method="pixel-max"))
    unaligned = slicer.util.arrayFromVolume(logic.fuse(mri, ct, "ct", method="pixel-max", registration="none"))
    aligned = slicer.util.arrayFromVolume(fused)
    assert np.abs(aligned - reference).mean() < 0.25 * np.abs(unaligned - reference).mean()


def test_refused_and_cancelled_alignments_leave_the_scene_as_it_was(app, logic):
    from EdgeFusionLib.errors import FusionCancelled, InputError

    mri = sampledata.load_sample_volume("EdgeFusionPhantom-MRI", app.volumes_logic)
    ct = misplaced_ct(app)
    nodes_before = app.node_ids()
    with pytest.raises(FusionCancelled):
        logic.fuse(mri, ct, "ct", method="pixel-max", registration="rigid", cancel=lambda: True)
    assert app.node_ids() == nodes_before

    one_slice = app.add_volume(slicer.util.arrayFromVolume(ct)[10:11].copy(), volumes.ijk_to_ras(ct), "one CT slice")
    nodes_before = app.node_ids()
    with pytest.raises(InputError, match="single slice"):
        logic.fuse(mri, one_slice, "ct", method="pixel-max", registration="rigid")
    assert app.node_ids() == nodes_before


class StandInDicomDatabase:
    """What the module asks Slicer's DICOM database (``slicer.dicomDatabase``): a file per instance, a tag per file."""

    def __init__(self, frames: dict[str, str]):
        self.frames = frames  # instance UID -> FrameOfReferenceUID

    def fileForInstance(self, uid):  # noqa: N802  (Slicer's name)
        return f"/dicom/{uid}.dcm" if uid in self.frames else ""

    def fileValue(self, file_name, tag):  # noqa: N802
        assert tag == "0020,0052"
        return self.frames[file_name.removeprefix("/dicom/").removesuffix(".dcm")]


def test_align_checkbox_follows_the_rule_until_the_user_sets_it(app, logic, monkeypatch):
    from EdgeFusionMRML.controller import FusionController, FusionSettings

    mri = sampledata.load_sample_volume("EdgeFusionPhantom-MRI", app.volumes_logic)
    ct = misplaced_ct(app)
    controller = FusionController(logic, FusionSettings(mriVolume=mri))
    controller.settings.otherVolume = ct
    controller.settings_changed()
    view = controller.view()
    assert view.problem is None and view.align_checked  # two volumes from different scanners: align
    assert "frame of reference" in view.align_tooltip

    # Both series in one DICOM frame of reference (e.g. a PET/CT's CT against its own scanner's MRI): no alignment.
    monkeypatch.setattr(slicer, "dicomDatabase", StandInDicomDatabase({"1.2.1": "1.2.99", "1.2.2": "1.2.99"}), raising=False)
    mri.SetAttribute("DICOM.instanceUIDs", "1.2.1")
    ct.SetAttribute("DICOM.instanceUIDs", "1.2.2")
    assert not controller.view().align_checked
    controller.set_align(True)  # the user knows better
    assert controller.settings.register == "rigid" and controller.view().align_checked
    assert controller.prepare().options.registration == "rigid"
    controller.set_align(False)
    assert controller.prepare().options.registration == "none"

    # A new second volume: the rule decides again.
    other = app.add_volume(slicer.util.arrayFromVolume(ct).copy(), volumes.ijk_to_ras(ct), "CT again")
    controller.settings.otherVolume = other
    controller.settings_changed()
    assert controller.settings.register == "auto" and controller.view().align_checked


def test_background_alignment_gives_the_same_transform_and_progress(app, logic):
    """Apply in the panel: the worker process aligns, reports it, and finish adds the same nodes."""
    from EdgeFusionMRML.controller import FusionController, FusionSettings

    mri = sampledata.load_sample_volume("EdgeFusionPhantom-MRI", app.volumes_logic)
    ct = misplaced_ct(app)
    controller = FusionController(logic, FusionSettings(mriVolume=mri, otherVolume=ct, modality="CT", fusionRule="pixel-max"))
    assert controller.view().align_checked
    controller.apply()
    end = controller.wait(timeout=300)
    assert end.state == "finished", end.message
    assert "Aligned first (rigid" in end.message
    transform = slicer.util.getNode("scanner CT to EdgeFusionPhantom-MRI (registration)")
    assert residual(transform, head_points(mri)).mean() < 1.0
    assert end.result_node.GetAttribute("EdgeFusion.Registration").startswith("rigid")


def test_the_checkbox_view_survives_an_empty_volume(app, logic):
    """The panel renders the checkbox on every change, also while a chosen volume has no voxels yet."""
    from EdgeFusionMRML.controller import FusionController, FusionSettings

    mri = sampledata.load_sample_volume("EdgeFusionPhantom-MRI", app.volumes_logic)
    empty = app.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty CT")
    controller = FusionController(logic, FusionSettings(mriVolume=mri, otherVolume=empty, modality="CT"))
    view = controller.view()
    assert "is empty" in view.problem and view.align_checked
