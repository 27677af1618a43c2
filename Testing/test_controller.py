"""The panel's behaviour (EdgeFusionMRML.controller), on a real Slicer scene and a real worker process.

Both front ends, the Slicer panel and the web app, only render ``FusionController.view()``
and call its actions, so what is tested here is what either panel does: which inputs are
valid, what the Apply button says and does, the modality preselection, progress, Cancel,
the result in the slice views and the Display controls.
"""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="Slicer's MRML libraries (pip install slicer-core) are not installed")

from edgefusion_slicer_support import SLICE_VIEWS, app, logic  # noqa: E402,F401  (pytest fixtures)

from EdgeFusionLib.errors import InputError  # noqa: E402
from EdgeFusionMRML import sampledata  # noqa: E402
from EdgeFusionMRML.background import BackgroundFusion  # noqa: E402
from EdgeFusionMRML.controller import (  # noqa: E402
    APPLY_TOOLTIP,
    FusionController,
    FusionSettings,
    fusion_rule_choices,
)

WORKER_TIMEOUT = 180  # seconds; starting Python and importing torch dominates


@pytest.fixture
def phantoms(app):
    """The sample MRI, CT and SPECT phantoms loaded as Slicer loads them (SPECT shown in grey)."""
    return {name: sampledata.load_sample_volume(f"EdgeFusionPhantom-{name}", app.volumes_logic) for name in ("MRI", "CT", "SPECT")}


@pytest.fixture
def controller(logic, tmp_path):
    """A controller whose workers keep their job folders under tmp_path (to check that they are removed)."""
    return FusionController(logic, FusionSettings(), run_factory=lambda job: BackgroundFusion(job, work_folder=tmp_path))


def choose(controller, **choices):
    """What a panel does when the user changes selectors: set the settings, then tell the controller."""
    for name, value in choices.items():
        setattr(controller.settings, name, value)
    controller.settings_changed()


# ---------------------------------------------------------------- choosing inputs


def test_a_newly_chosen_second_volume_gets_its_modality_colours_and_a_status_line(app, controller, phantoms):
    choose(controller, mriVolume=phantoms["MRI"], otherVolume=phantoms["SPECT"])
    assert controller.settings.modality == "SPECT"
    assert controller.view().status == (
        "Modality SPECT preselected: its name 'EdgeFusionPhantom-SPECT' says SPECT. Change it if that is wrong.")
    # Shown in grey, so the fusion colours come from PET-Heat (a grey table would fuse no colour at all).
    assert controller.settings.colourTable.GetID() == app.colour_node("PET-Heat").GetID()
    assert controller.view().colour_table_enabled

    choose(controller, otherVolume=phantoms["CT"])
    assert controller.settings.modality == "CT"
    assert not controller.view().colour_table_enabled  # a CT is fused in grey


def test_a_name_that_says_nothing_asks_for_the_modality_and_keeps_the_choice(app, controller, phantoms):
    unnamed = app.add_volume(slicer.util.arrayFromVolume(phantoms["CT"]).copy(), name="series 7")
    choose(controller, mriVolume=phantoms["MRI"], modality="PET", otherVolume=unnamed)
    assert controller.settings.modality == "PET"
    assert controller.view().status == (
        "Choose the modality of 'series 7': neither a DICOM Modality tag nor its name 'series 7' says CT, SPECT or PET.")


def test_the_modality_of_saved_settings_or_of_a_loaded_scene_is_not_guessed_over(app, controller, phantoms):
    saved = FusionSettings(mriVolume=phantoms["MRI"], otherVolume=phantoms["SPECT"], modality="PET")
    controller.adopt(saved)
    controller.settings_changed()
    assert saved.modality == "PET"

    app.scene.StartState(slicer.vtkMRMLScene.ImportState)  # a scene being loaded sets the second volume
    choose(controller, otherVolume=phantoms["CT"])
    app.scene.EndState(slicer.vtkMRMLScene.ImportState)
    assert saved.modality == "PET" and controller.view().status == ""


def test_default_inputs_are_a_recognised_second_volume_and_another_volume_as_mri(controller, phantoms):
    controller.select_default_inputs()
    settings = controller.settings
    assert (settings.mriVolume, settings.otherVolume, settings.modality) == (phantoms["MRI"], phantoms["CT"], "CT")
    chosen = FusionSettings(mriVolume=phantoms["CT"])
    controller.adopt(chosen)
    controller.select_default_inputs()  # the user's choice stands
    assert (chosen.mriVolume, chosen.otherVolume) == (phantoms["CT"], None)


def test_apply_is_enabled_only_for_inputs_that_can_be_fused_and_says_why_not(app, controller, phantoms):
    view = controller.view()
    assert (view.apply_text, view.apply_enabled, view.apply_tooltip) == ("Apply", False, "Select an MRI volume.")
    labels = slicer.vtkMRMLLabelMapVolumeNode()
    app.scene.AddNode(labels)
    labels.SetAndObserveImageData(phantoms["CT"].GetImageData())
    labels.SetName("segmentation")
    for other, reason in ((None, "Select a CT, SPECT or PET volume"), (phantoms["MRI"], "the same volume"),
                          (labels, "is a label map")):
        choose(controller, mriVolume=phantoms["MRI"], otherVolume=other)
        view = controller.view()
        assert not view.apply_enabled and reason in view.problem and view.apply_tooltip == view.problem
    choose(controller, otherVolume=phantoms["CT"])
    view = controller.view()
    assert (view.apply_enabled, view.problem, view.apply_tooltip, view.inputs_enabled, view.progress) == (
        True, None, APPLY_TOOLTIP, True, None)
    choose(controller, register="sideways")  # what a hand-edited scene file could hold
    assert controller.view().problem.startswith("Unknown registration 'sideways': choose one of auto, none, rigid")


def test_apply_with_inputs_that_cannot_be_fused_starts_nothing(app, logic, phantoms):
    started = []
    controller = FusionController(logic, FusionSettings(mriVolume=phantoms["MRI"], otherVolume=phantoms["CT"], modality="CT",
                                                        device="cuda:7"), run_factory=started.append)
    ids_before = app.node_ids()
    with pytest.raises(InputError, match="cuda:7"):
        controller.apply()
    assert started == [] and not controller.running and app.node_ids() == ids_before


def test_rule_choices_start_with_the_modality_default():
    choices = fusion_rule_choices()
    assert choices[0] == ("", "Default for the modality")
    assert {"local-activity", "pixel-average", "pixel-max"} <= {value for value, _ in choices}


# ---------------------------------------------------------------- running in the worker process


def test_apply_runs_the_worker_shows_progress_and_then_the_result_over_the_mri(app, logic, controller, phantoms):
    # Placed by their headers (the phantoms are aligned): the progress counts slices (alignment: test_slicer_registration).
    choose(controller, mriVolume=phantoms["MRI"], otherVolume=phantoms["SPECT"], fusionRule="pixel-average", opacity=0.4)
    controller.set_align(False)
    controller.apply()
    view = controller.view()
    assert (view.apply_text, view.apply_enabled, view.inputs_enabled, view.status) == ("Cancel", True, False, "Starting...")
    assert view.progress == (0, 0)  # busy until the worker reports its slices
    seen = set()
    while controller.running:
        end = controller.poll()
        if controller.running:
            seen.add(controller.view().progress)
    assert end.state == "finished"
    assert seen <= {(0, 0)} | {(done, 24) for done in range(25)}  # the phantom's 24 axial slices
    fused = end.result_node
    assert fused.GetClassName() == "vtkMRMLVectorVolumeNode" and fused.GetScene() is app.scene
    assert controller.view().status.startswith(f"'{fused.GetName()}' made in ") and controller.view().status.endswith(" (cpu).")
    assert controller.view().apply_text == "Apply" and controller.view().progress is None
    assert (controller.settings.resultMriVolume, controller.settings.resultVolume) == (phantoms["MRI"], fused)
    for view_name in SLICE_VIEWS:
        composite = app.slice_logics[view_name].GetSliceCompositeNode()
        assert (composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID()) == (phantoms["MRI"].GetID(), fused.GetID())
        assert composite.GetForegroundOpacity() == pytest.approx(0.4)
    # The worker's voxels are the in-process fusion's.
    in_process = logic.fuse(phantoms["MRI"], phantoms["SPECT"], "spect", method="pixel-average",
                            colour_node=controller.settings.colourTable)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(fused), slicer.util.arrayFromVolume(in_process))


def test_cancel_says_cancelling_then_leaves_the_scene_and_no_job_folder(app, controller, phantoms, tmp_path):
    choose(controller, mriVolume=phantoms["MRI"], otherVolume=phantoms["CT"], fusionRule="pixel-average")
    ids_before = app.node_ids()
    controller.apply()
    controller.apply()  # the same button, now "Cancel"
    view = controller.view()
    assert (view.apply_text, view.apply_enabled, view.inputs_enabled) == ("Cancelling...", False, False)
    end = controller.wait(timeout=WORKER_TIMEOUT)
    assert (end.state, end.result_node) == ("cancelled", None)
    assert controller.view().status == "Cancelled; the scene was not changed."
    assert app.node_ids() == ids_before and list(tmp_path.iterdir()) == []
    assert controller.view().apply_text == "Apply" and controller.view().apply_enabled


def test_stop_kills_the_worker_for_good(app, controller, phantoms, tmp_path):
    choose(controller, mriVolume=phantoms["MRI"], otherVolume=phantoms["CT"], fusionRule="pixel-average")
    ids_before = app.node_ids()
    controller.apply()
    process = controller.run._process
    controller.stop()  # the scene closes
    assert process.poll() is not None and not controller.running and controller.poll() is None
    assert app.node_ids() == ids_before and list(tmp_path.iterdir()) == []


def test_a_worker_that_dies_is_reported_and_changes_nothing(app, logic, phantoms, tmp_path):
    controller = FusionController(logic, FusionSettings(), run_factory=lambda job: BackgroundFusion(
        job, python_executable="/bin/false", work_folder=tmp_path))  # exits 1 at once
    choose(controller, mriVolume=phantoms["MRI"], otherVolume=phantoms["CT"], fusionRule="pixel-average")
    ids_before = app.node_ids()
    controller.apply()
    end = controller.wait(timeout=30)
    assert end.state == "failed" and "stopped unexpectedly (exit code 1)" in end.message
    assert controller.view().status == "Failed: " + end.message
    assert app.node_ids() == ids_before and list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- display


def test_display_controls_act_on_the_views_while_they_show_the_result(app, logic, controller, phantoms):
    fused = logic.fuse(phantoms["MRI"], phantoms["CT"], "ct", method="pixel-max")
    controller.show_result(phantoms["MRI"], fused)
    red = app.slice_logics["Red"].GetSliceCompositeNode()
    controller.set_opacity(0.8)
    assert red.GetForegroundOpacity() == pytest.approx(0.8) and controller.settings.opacity == 0.8
    controller.set_fused_on_top(False)
    assert (red.GetBackgroundVolumeID(), red.GetForegroundVolumeID()) == (fused.GetID(), phantoms["MRI"].GetID())
    assert red.GetForegroundOpacity() == pytest.approx(0.8)
    with pytest.raises(ValueError):
        controller.set_opacity(1.5)

    # The user shows something else: the Display controls keep their values but leave the views alone.
    for composite in logic.slice_composite_nodes():
        composite.SetBackgroundVolumeID(phantoms["CT"].GetID())
        composite.SetForegroundVolumeID(None)
        composite.SetForegroundOpacity(0.0)
    controller.set_opacity(0.3)
    controller.set_fused_on_top(True)
    assert controller.shown_result() is None and controller.settings.opacity == 0.3
    assert (red.GetBackgroundVolumeID(), red.GetForegroundVolumeID(), red.GetForegroundOpacity()) == (phantoms["CT"].GetID(), None, 0.0)
