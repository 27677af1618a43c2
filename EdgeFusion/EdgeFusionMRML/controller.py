"""The EdgeFusion panel's state and behaviour, without any GUI: one controller, two faces.

The Slicer panel (``EdgeFusion.py``, Qt) and the web app (``EdgeFusionApp``, trame) both
bind to a :class:`FusionController`; neither decides anything itself. The controller holds
what a panel shows and does:

* the user's choices, in a *settings* object: :class:`FusionSettings` in the web app, the
  module's parameter node in Slicer (it has the same field names, so the panel hands the
  parameter node over as it is and it stays the panel's persistence in the scene);
* what follows from them, as one snapshot (:meth:`FusionController.view`): the problem that
  keeps Apply disabled, the Apply button's text ("Apply", "Cancel", "Cancelling..."), whether
  the colour-table selector applies, the status line, the progress;
* the actions: a newly chosen second volume (modality guess, status, default colour table),
  Apply (prepare the job and start the worker), polling the worker (progress, then the
  result node shown over the MRI), Cancel, the Display controls, and stopping for good when
  the scene closes.

Node fields of the settings hold volume or colour nodes (or None); choice fields hold the
plain value ('auto', 'axial', 'cpu') or an enum whose ``value`` is it (the parameter node's).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

from . import environment
from .background import BackgroundFusion, FusionStatus
from .logic import FusionJob, VolumeFusionLogic, modality_entry

environment.ensure_library_importable()
from EdgeFusionLib.modality import MODALITIES  # noqa: E402  (the modality table; imports nothing heavy)

#: Slice planes a fusion can run in ('auto': the MRI's acquisition plane), in the order offered.
SLICE_PLANES = ("auto", "axial", "coronal", "sagittal")


APPLY_TEXT = "Apply"
CANCEL_TEXT = "Cancel"
CANCELLING_TEXT = "Cancelling..."
APPLY_TOOLTIP = "Fuse the two volumes."
CANCEL_TOOLTIP = "Stop the fusion; the scene stays as it was."
DEFAULT_RULE_LABEL = "Default for the modality"


@dataclasses.dataclass
class FusionSettings:
    """The user's choices, with the field names of the Slicer module's parameter node.

    mriVolume, otherVolume - the volumes to fuse (volume nodes or None).
    modality - of otherVolume: a label of the modality table ("CT", "SPECT", "PET").
    outputVolume - None: create a new volume.
    fusionRule - "" for the modality's default, else a name from EdgeFusionLib.fusion.methods.
    slicePlane - one of SLICE_PLANES.
    device - 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.
    batchSize - 0: the device's default.
    colourTable - colour node a greyscale SPECT/PET is fused through.
    register - align the second volume to the MRI first: 'auto' (by the command line's rule, see
        ``VolumeFusionLogic.registration_choice``), 'none', 'rigid' or 'affine'.
    fusedOnTop, opacity - how the result is blended over the MRI in the slice views (opacity in [0, 1]).
    resultMriVolume, resultVolume - the last result and its MRI, which the Display controls act on.
    """

    mriVolume: Any = None
    otherVolume: Any = None
    modality: str = next(iter(MODALITIES.values())).label
    outputVolume: Any = None
    fusionRule: str = ""
    slicePlane: str = "auto"
    device: str = "auto"
    batchSize: int = 0
    colourTable: Any = None
    register: str = "auto"
    fusedOnTop: bool = True
    opacity: float = 0.5
    resultMriVolume: Any = None
    resultVolume: Any = None


#: The settings fields the Slicer parameter node must have.
PARAMETER_NODE_FIELDS = tuple(field.name for field in dataclasses.fields(FusionSettings))


@dataclasses.dataclass(frozen=True)
class PanelView:
    """Everything a panel shows that follows from the settings and the run: render it, decide nothing."""

    problem: str | None  #: why Apply cannot fuse (None: it can)
    apply_text: str  #: "Apply", "Cancel" or "Cancelling..."
    apply_enabled: bool
    apply_tooltip: str
    inputs_enabled: bool  #: False while a fusion runs
    colour_table_enabled: bool  #: the colour table applies (greyscale SPECT/PET)
    align_checked: bool  #: "Align to the MRI first" is on (the second volume will be registered)
    align_tooltip: str  #: why it is on or off
    status: str  #: the status line
    progress: tuple[int, int] | None  #: (slices done, slices in total), (0, 0) while starting; None: no run


@dataclasses.dataclass(frozen=True)
class RunEnd:
    """How a run ended, returned once by :meth:`FusionController.poll`."""

    state: str  #: "finished", "cancelled" or "failed"
    message: str  #: the status line; for "failed", the error to show the user
    result_node: Any = None  #: the fused volume node of a finished run


def fusion_rule_choices() -> list[tuple[str, str]]:
    """(value, label) of every fusion rule a panel offers, the modality's default first (imports torch)."""
    from EdgeFusionLib.fusion.methods import get_method, method_names

    return [("", DEFAULT_RULE_LABEL)] + [(name, f"{name}: {get_method(name).description}") for name in method_names()]


def device_summary() -> str:
    """One line naming the GPUs the network can run on here, or saying that the CPU is used (imports torch)."""
    from EdgeFusionLib.devices import available_devices

    gpus = [entry["name"] for entry in available_devices() if entry["device"].startswith("cuda")]
    return ("GPU: " + ", ".join(gpus)) if gpus else "No CUDA GPU found: the CPU is used."


def choice_value(value) -> str:
    """'auto' for 'auto' or for an enum member whose value is 'auto' (the parameter node's choices)."""
    return getattr(value, "value", value)


def node_id(node) -> str | None:
    return node.GetID() if node is not None else None


def default_run_factory(job: FusionJob) -> BackgroundFusion:
    """A worker with this interpreter and the system's temporary folder (tests, scripts)."""
    return BackgroundFusion(job)


class FusionController:
    """State and behaviour of an EdgeFusion panel, bound to by the Slicer panel and the web app.

    :param logic: the ``VolumeFusionLogic`` of the scene the panel works in.
    :param settings: the user's choices (:class:`FusionSettings` or the module's parameter node).
    :param run_factory: makes the ``BackgroundFusion`` for a job (Slicer: ``PythonSlicer`` and
        its launcher; web app: the session's private folder).
    :param clock: seconds, for the time a fusion took (tests pass a fake one).
    """

    def __init__(self, logic: VolumeFusionLogic, settings, run_factory: Callable[[FusionJob], BackgroundFusion] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.logic = logic
        self.run_factory = run_factory or default_run_factory
        self.clock = clock
        self.settings = settings
        self.status = ""
        self.run: BackgroundFusion | None = None
        self._run_started = 0.0
        self._other_volume_id = node_id(settings.otherVolume)

    # ---------------------------------------------------------------- settings

    def adopt(self, settings) -> None:
        """Work on other settings (a reopened scene's parameter node): its modality stands, nothing is guessed."""
        self.settings = settings
        self._other_volume_id = node_id(settings.otherVolume)

    def remember_other_volume(self) -> None:
        """Take the current second volume as already filled in (it came with a loaded scene)."""
        self._other_volume_id = node_id(self.settings.otherVolume)

    def settings_changed(self) -> None:
        """Call after any change of the settings: a newly chosen second volume gets its modality and colours."""
        other = self.settings.otherVolume
        if node_id(other) == self._other_volume_id:
            return
        self._other_volume_id = node_id(other)
        if other is not None and not self.logic.scene.IsImporting():  # a loaded scene brings its own choices
            self._fill_in_from_other_volume(other)

    def _fill_in_from_other_volume(self, node) -> None:
        """Preselect the modality (DICOM modality or name) and a colour table for a newly chosen second volume.

        The status line says where the modality came from, or that it must be chosen, so that a
        guess is never taken silently (the command line refuses to guess where a panel asks).
        """
        guess = self.logic.guess_modality(node)
        if guess.modality is not None:
            self.settings.modality = guess.modality.label
            self.status = f"Modality {guess.modality.label} preselected: {guess.reason}. Change it if that is wrong."
        else:
            self.status = f"Choose the modality of '{node.GetName()}': {guess.reason}."
        self.settings.colourTable = self.logic.fusion_colour_node(node)
        self.settings.register = "auto"  # a new pair: align it or not by the rule again

    def select_default_inputs(self) -> None:
        """With no input chosen: the first volume of a known CT/SPECT/PET modality as the second input, another as MRI."""
        if self.settings.mriVolume is not None or self.settings.otherVolume is not None:
            return
        volumes = self.image_volumes()
        other = next((node for node in volumes if self.logic.guess_modality(node).modality), None)
        mri = next((node for node in volumes if node is not other and not node.IsA("vtkMRMLVectorVolumeNode")), None)
        if mri is not None:
            self.settings.mriVolume = mri
        if other is not None:
            self.settings.otherVolume = other
        self.settings_changed()

    def image_volumes(self) -> list:
        """The scene's image volumes (scalar and RGB, no label maps), in scene order: what the selectors list."""
        collection = self.logic.scene.GetNodesByClass("vtkMRMLScalarVolumeNode")
        nodes = [collection.GetItemAsObject(index) for index in range(collection.GetNumberOfItems())]
        return [node for node in nodes if not node.IsA("vtkMRMLLabelMapVolumeNode") and not node.GetHideFromEditors()]

    # ---------------------------------------------------------------- derived state

    def problem(self) -> str | None:
        """Why Apply cannot fuse the chosen inputs, as one sentence; None when it can."""
        settings = self.settings
        problem = self.logic.validate_inputs(settings.mriVolume, settings.otherVolume, settings.modality, settings.outputVolume)
        if problem is None:
            alignment, why = self._alignment()
            problem = why if alignment is None else None
        return problem

    def _alignment(self) -> tuple[str | None, str]:
        """(the registration a run would do, why); (None, the problem) when the choice cannot run."""
        from EdgeFusionLib.errors import InputError

        from .logic import as_sentence

        settings = self.settings
        if settings.mriVolume is None or settings.otherVolume is None:
            return "none", ""
        try:
            return self.logic.registration_choice(settings.mriVolume, settings.otherVolume, choice_value(settings.register))
        except InputError as error:
            return None, as_sentence(str(error))

    def set_align(self, align: bool) -> None:
        """The "Align to the MRI first" checkbox: register rigidly, or fuse the volumes as they are placed."""
        self.settings.register = "rigid" if align else "none"

    def colour_table_applies(self) -> bool:
        """The colour table is used: a greyscale second volume of a modality shown in colour (SPECT, PET)."""
        other = self.settings.otherVolume
        entry = modality_entry(self.settings.modality)
        return other is not None and entry is not None and entry.shown_in_colour and not other.IsA("vtkMRMLVectorVolumeNode")

    @property
    def running(self) -> bool:
        return self.run is not None

    def view(self) -> PanelView:
        """What the panel shows now."""
        run = self.run
        if run is not None:
            cancelling = run.cancel_requested
            status = run.status
            return PanelView(
                problem=None,
                apply_text=CANCELLING_TEXT if cancelling else CANCEL_TEXT,
                apply_enabled=not cancelling,
                apply_tooltip=CANCEL_TOOLTIP,
                inputs_enabled=False,
                colour_table_enabled=self.colour_table_applies(),
                align_checked=run.job.options.registration != "none",
                align_tooltip=run.job.registration_reason,
                status=self.status,
                progress=(status.slices_done, status.slices_total),
            )
        problem = self.problem()
        alignment, why = self._alignment()
        return PanelView(
            problem=problem,
            apply_text=APPLY_TEXT,
            apply_enabled=problem is None,
            apply_tooltip=problem or APPLY_TOOLTIP,
            inputs_enabled=True,
            colour_table_enabled=self.colour_table_applies(),
            align_checked=alignment not in (None, "none"),
            align_tooltip=why,
            status=self.status,
            progress=None,
        )

    # ---------------------------------------------------------------- running

    def prepare(self) -> FusionJob:
        """Check the inputs and copy them out of the scene (raises ``InputError`` with a one-line message)."""
        from EdgeFusionLib.errors import InputError

        problem = self.problem()
        if problem:
            raise InputError(problem)
        settings = self.settings
        return self.logic.prepare(
            settings.mriVolume,
            settings.otherVolume,
            settings.modality,
            method=settings.fusionRule or None,
            axis=self.logic.axis_for_plane(settings.mriVolume, choice_value(settings.slicePlane)),
            device=choice_value(settings.device),
            batch_size=settings.batchSize or None,
            colour_node=settings.colourTable if self.colour_table_applies() else None,
            output_node=settings.outputVolume,
            registration=choice_value(settings.register),
        )

    def apply(self) -> None:
        """The Apply button: start a fusion, or cancel the one that runs.

        Raises ``InputError`` (nothing started, nothing left behind) for inputs that cannot be fused.
        """
        if self.run is not None:
            self.cancel()
            return
        job = self.prepare()
        run = self.run_factory(job)
        run.start()  # raises (leaving nothing behind) if the worker cannot be started
        self.run = run
        self._run_started = self.clock()
        self.status = "Starting..."

    def poll(self) -> RunEnd | None:
        """Take in the worker's progress; when the run has just ended, finish it and say how (else None)."""
        run = self.run
        if run is None:
            return None
        status = run.poll()
        if not run.cancel_requested:
            aligning = run.job.options.registration != "none" and not status.registration
            if aligning:
                self.status = f"Aligning to the MRI ({run.job.options.registration})..."
            elif status.slices_total:
                self.status = f"Fusing on {status.device_name or status.device}..."
        if not status.is_over:
            return None
        return self._finish(run, status)

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> RunEnd | None:
        """Poll until the run ends (scripts and tests; the panels poll from a timer)."""
        deadline = None if timeout is None else self.clock() + timeout
        while self.run is not None:
            end = self.poll()
            if end is not None:
                return end
            if deadline is not None and self.clock() > deadline:
                raise TimeoutError(f"fusion still running after {timeout} s")
            time.sleep(interval)
        return None

    def _finish(self, run: BackgroundFusion, status: FusionStatus) -> RunEnd:
        self.run = None
        seconds = self.clock() - self._run_started
        try:
            if status.state == "finished":
                device = f"{status.device_name} ({status.device})" if status.device_name != status.device else status.device
                fused = self.logic.finish(run.job, run.result(), {"Device": device, "Seconds": f"{seconds:.1f}"})
                self.show_result(self.logic.scene.GetNodeByID(run.job.mri_node_id), fused)
                self.status = f"'{fused.GetName()}' made in {seconds:.1f} s on {device}."
                if status.registration:
                    self.status += f" Aligned first ({status.registration}); the transform is in the Transforms module."
                return RunEnd("finished", self.status, fused)
            if status.state == "cancelled":
                self.status = "Cancelled; the scene was not changed."
                return RunEnd("cancelled", self.status)
            self.status = "Failed: " + status.message
            return RunEnd("failed", status.message)
        except Exception as error:  # e.g. the MRI was removed during the fusion: tell the user, keep the panel alive
            self.status = f"Failed: {error}"
            return RunEnd("failed", str(error))
        finally:
            run.close()

    def cancel(self) -> None:
        """Ask the running fusion to stop; :meth:`poll` reports the end (the scene stays as it was)."""
        if self.run is not None:
            self.run.cancel()
            self.status = "Cancelling..."

    def stop(self) -> None:
        """Stop the worker for good and forget the run (scene closing, panel reloading, session ending)."""
        run, self.run = self.run, None
        if run is not None:
            run.cancel()
            run.close()
            self.status = "Cancelled; the scene was not changed."

    # ---------------------------------------------------------------- display

    def show_result(self, mri_node, fused_node) -> None:
        """Show a result over its MRI in every slice view, with the Display settings, and remember it."""
        settings = self.settings
        settings.resultMriVolume, settings.resultVolume = mri_node, fused_node
        self.logic.show_result(mri_node, fused_node, fused_on_top=settings.fusedOnTop, opacity=settings.opacity, fit_views=True)

    def shown_result(self):
        """(MRI node, fused node) of the last result while a slice view shows them, else None.

        Display changes act only on views that show the result: reopening a scene writes the saved
        Display values into the panel, and that must not override views the user set up since.
        """
        settings = self.settings
        if settings.resultMriVolume is None or settings.resultVolume is None:
            return None
        nodes = settings.resultMriVolume, settings.resultVolume
        wanted = {node.GetID() for node in nodes}
        for composite in self.logic.slice_composite_nodes():
            if {composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID()} == wanted:
                return nodes
        return None

    def set_opacity(self, opacity: float) -> None:
        """Top layer opacity in [0, 1], live in the views that show the result."""
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f"opacity must be in [0, 1], got {opacity}")
        self.settings.opacity = float(opacity)
        if self.shown_result():
            self.logic.set_foreground_opacity(opacity)

    def set_fused_on_top(self, fused_on_top: bool) -> None:
        """Draw the fused volume over the MRI (True) or the MRI over it, live in the views that show the result."""
        self.settings.fusedOnTop = bool(fused_on_top)
        shown = self.shown_result()
        if shown:
            self.logic.show_result(*shown, fused_on_top=fused_on_top, opacity=self.settings.opacity, fit_views=False)
