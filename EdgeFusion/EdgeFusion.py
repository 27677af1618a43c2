"""EdgeFusion: fuse an MRI with a CT, SPECT or PET volume in 3D Slicer (EH-DRAN network).

Layout (the Extension Wizard's scripted-module template):

* ``EdgeFusion``: module description, registration of the sample data;
* ``EdgeFusionParameterNode``: the panel's state, saved with the scene;
* ``EdgeFusionWidget``: the panel (``Resources/UI/EdgeFusion.ui``), runs the fusion in a
  background process with progress and Cancel;
* ``EdgeFusionLogic``: what batch scripts use; the work is done by
  ``EdgeFusionMRML.logic.VolumeFusionLogic`` (no Qt, tested in CI with Slicer's MRML libraries);
* ``EdgeFusionTest``: the self-test, run from the Reload & Test button or ``slicer.selfTests``.

File-scope imports are Slicer's own modules and ``EdgeFusionMRML`` (standard library
and numpy only), so loading this module at Slicer startup stays cheap and never
needs torch. EdgeFusionLib, SimpleITK and torch are imported when they are used;
torch is installed through the PyTorch extension on the first Apply, after asking.
"""

import enum
import logging
import os
import shutil
import sys
import time
from typing import Annotated, Optional, Union

import qt
import vtk

import slicer
from slicer import vtkMRMLColorNode, vtkMRMLScalarVolumeNode, vtkMRMLVectorVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from EdgeFusionMRML import dependencies, environment
from EdgeFusionMRML.background import BackgroundFusion
from EdgeFusionMRML.logic import VolumeFusionLogic, modality_entry

environment.ensure_library_importable()
from EdgeFusionLib.modality import MODALITIES  # noqa: E402  (the modality table; imports nothing heavy)

#: Oldest torch EdgeFusionLib is tested with (passed to the PyTorch extension's installer).
MINIMUM_TORCH_VERSION = "2.1"
#: How often the panel checks on a running fusion (milliseconds).
PROGRESS_POLL_INTERVAL_MS = 200



#
# EdgeFusion
#


class EdgeFusion(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("EdgeFusion")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Filtering")]
        self.parent.dependencies = []
        self.parent.contributors = ["EdgeFusion developers"]
        self.parent.helpText = _("""
Fuses an MRI with a CT, SPECT or PET volume into one image with the EH-DRAN network
(edge-enhanced dilated residual attention). Select the two volumes and press Apply; the fused
volume is shown over the MRI in the slice views. SPECT/PET shown through a colour table give
an RGB volume that keeps those colours. Try it on the "EdgeFusion" phantoms of the Sample Data module.
""")
        self.parent.acknowledgementText = _("""
EH-DRAN: Zhou M, Zhang Y, Xu X, Wang J, Khalvati F. Edge-Enhanced Dilated Residual Attention Network
for Multimodal Medical Image Fusion. IEEE BIBM 2024. arXiv:2411.11799.
The module follows the 3D Slicer Extension Wizard template.
""")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Add the EdgeFusion phantoms (MRI + CT, MRI + SPECT) to the Sample Data module."""
    import SampleData

    from EdgeFusionMRML import sampledata

    for source in sampledata.sample_data_sources():
        SampleData.SampleDataLogic.registerCustomSampleDataSource(**source)


#
# EdgeFusionParameterNode
#


class SlicePlane(enum.Enum):
    AUTOMATIC = "auto"
    AXIAL = "axial"
    CORONAL = "coronal"
    SAGITTAL = "sagittal"

    def label(self):
        # Literal strings, so that the translation tools can extract them.
        return {"auto": _("Automatic (acquisition plane)"), "axial": _("Axial"), "coronal": _("Coronal"),
                "sagittal": _("Sagittal")}[self.value]


class ComputeDevice(enum.Enum):
    AUTOMATIC = "auto"
    CPU = "cpu"
    GPU = "cuda"

    def label(self):
        return {"auto": _("Automatic"), "cpu": _("CPU"), "cuda": _("GPU (CUDA)")}[self.value]


@parameterNodeWrapper
class EdgeFusionParameterNode:
    """The panel's settings, saved in the scene.

    mriVolume, otherVolume - the volumes to fuse.
    modality - of otherVolume: "CT", "SPECT" or "PET".
    outputVolume - None: create a new volume.
    fusionRule - "" for the modality's default, else a name from EdgeFusionLib.fusion.methods.
    colourTable - colours of a greyscale SPECT/PET.
    batchSize - 0: the device's default.
    fusedOnTop, opacity - how the result is blended over the MRI in the slice views.
    resultMriVolume, resultVolume - the last result and its MRI, which the Display controls act on
    (saved with the scene, so they keep working after it is reopened).
    """

    mriVolume: vtkMRMLScalarVolumeNode
    otherVolume: Union[vtkMRMLScalarVolumeNode, vtkMRMLVectorVolumeNode, None]
    modality: Annotated[str, Choice([entry.label for entry in MODALITIES.values()])] = next(iter(MODALITIES.values())).label
    outputVolume: Union[vtkMRMLScalarVolumeNode, vtkMRMLVectorVolumeNode, None]
    fusionRule: str = ""
    slicePlane: SlicePlane = SlicePlane.AUTOMATIC
    device: ComputeDevice = ComputeDevice.AUTOMATIC
    batchSize: Annotated[int, WithinRange(0, 256)] = 0
    colourTable: vtkMRMLColorNode
    fusedOnTop: bool = True
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    resultMriVolume: vtkMRMLScalarVolumeNode
    resultVolume: Union[vtkMRMLScalarVolumeNode, vtkMRMLVectorVolumeNode, None]


#
# EdgeFusionWidget
#


class EdgeFusionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None  # the BackgroundFusion in progress, if any
        self._runStartTime = 0.0
        self._otherVolumeId = None  # the second volume whose modality was last filled in
        self._pollTimer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/EdgeFusion.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = EdgeFusionLogic()

        self.ui.progressBar.hide()
        self.ui.fusionRuleComboBox.addItem(_("Default for the modality"), "")
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(PROGRESS_POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self._onPollTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)

        # Widgets that the parameter node wrapper cannot bind by themselves.
        self.ui.fusionRuleComboBox.connect("currentIndexChanged(int)", self.onFusionRuleChanged)
        self.ui.colourTableSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onColourTableChanged)
        self.ui.advancedCollapsibleButton.connect("contentsCollapsed(bool)", self.onAdvancedCollapsed)
        # Live display controls.
        self.ui.opacitySliderWidget.connect("valueChanged(double)", self.onOpacityChanged)
        self.ui.fusedOnTopCheckBox.connect("toggled(bool)", self.onFusedOnTopToggled)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._cancelRun(waitForWorker=True)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        # Keep a running fusion going; only stop reflecting parameter changes in the GUI.
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event) -> None:
        # Stop the worker for good: its result belongs to the scene being closed, not to the next one.
        self._cancelRun(waitForWorker=True)
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onSceneEndImport(self, caller, event) -> None:
        # A loaded scene brings its own modality for its second volume: nothing to guess.
        if self._parameterNode is not None:
            self._otherVolumeId = _idOf(self._parameterNode.otherVolume)

    def onReload(self) -> None:
        """Reload EdgeFusionLib and EdgeFusionMRML too, so code changes in them take effect."""
        self._cancelRun(waitForWorker=True)
        environment.reload_edgefusion_modules()
        super().onReload()

    # ---------------------------------------------------------------- parameter node

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.mriVolume and not self._parameterNode.otherVolume:
            self._selectDefaultInputs()

    def _selectDefaultInputs(self) -> None:
        """Pick the first volume of a known CT/SPECT/PET modality as the second input and another as MRI."""
        volumes = [node for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode") if not node.IsA("vtkMRMLLabelMapVolumeNode")]
        other = next((node for node in volumes if self.logic.guess_modality(node).modality), None)
        mri = next((node for node in volumes if node is not other and not node.IsA("vtkMRMLVectorVolumeNode")), None)
        if mri:
            self._parameterNode.mriVolume = mri
        if other:
            self._parameterNode.otherVolume = other

    def setParameterNode(self, inputParameterNode: Optional[EdgeFusionParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            # The modality saved with these parameters stands; it is guessed only for a newly chosen volume.
            self._otherVolumeId = _idOf(self._parameterNode.otherVolume)
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        """Show the parameters the wrapper does not bind, and enable Apply only for valid inputs."""
        parameters = self._parameterNode
        if parameters is None:
            return
        otherVolumeId = _idOf(parameters.otherVolume)
        if otherVolumeId != self._otherVolumeId:
            self._otherVolumeId = otherVolumeId
            if not slicer.mrmlScene.IsImporting():  # see onSceneEndImport
                self._fillInFromOtherVolume(parameters.otherVolume)
        with _NoSignals(self.ui.fusionRuleComboBox, self.ui.colourTableSelector):
            index = self.ui.fusionRuleComboBox.findData(parameters.fusionRule)
            if index < 0:  # a rule saved in the scene but not listed yet: list it
                self.ui.fusionRuleComboBox.addItem(parameters.fusionRule, parameters.fusionRule)
                index = self.ui.fusionRuleComboBox.count - 1
            self.ui.fusionRuleComboBox.currentIndex = index
            self.ui.colourTableSelector.setCurrentNode(parameters.colourTable)
        self._updateColourTableEnabled()
        self._updateApplyButton()

    def _updateColourTableEnabled(self) -> None:
        parameters = self._parameterNode
        greyColourVolume = (
            parameters.otherVolume is not None
            and modality_entry(parameters.modality).shown_in_colour
            and not parameters.otherVolume.IsA("vtkMRMLVectorVolumeNode")
        )
        self.ui.colourTableSelector.enabled = greyColourVolume
        self.ui.colourTableLabel.enabled = greyColourVolume

    def _updateApplyButton(self) -> None:
        if self._run is not None and self._run.cancel_requested:
            self.ui.applyButton.text = _("Cancelling...")
            self.ui.applyButton.enabled = False
            return
        if self._run is not None:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the fusion; the scene stays as it was.")
            self.ui.applyButton.enabled = True
            return
        parameters = self._parameterNode
        self.ui.applyButton.text = _("Apply")
        problem = self.logic.validate_inputs(parameters.mriVolume, parameters.otherVolume, parameters.modality, parameters.outputVolume)
        self.ui.applyButton.enabled = problem is None
        self.ui.applyButton.toolTip = problem or _("Fuse the two volumes.")

    # ---------------------------------------------------------------- GUI events

    def _fillInFromOtherVolume(self, node) -> None:
        """Preselect the modality (DICOM modality or name) and a colour table for a newly chosen second volume.

        The status line says where the modality came from, or that it must be chosen, so that a
        guess is never taken silently (the command line refuses to guess where this panel asks).
        """
        if node is None:
            return
        guess = self.logic.guess_modality(node)
        if guess.modality is not None:
            self._parameterNode.modality = guess.modality.label
            self.ui.statusLabel.text = _("Modality {label} preselected: {reason}. Change it if that is wrong.").format(
                label=guess.modality.label, reason=guess.reason)
        else:
            self.ui.statusLabel.text = _("Choose the modality of '{name}': {reason}.").format(name=node.GetName(), reason=guess.reason)
        self._parameterNode.colourTable = self.logic.fusion_colour_node(node)

    def onFusionRuleChanged(self, index) -> None:
        if self._parameterNode is not None and index >= 0:
            self._parameterNode.fusionRule = self.ui.fusionRuleComboBox.itemData(index) or ""

    def onColourTableChanged(self, node) -> None:
        if self._parameterNode is not None:
            self._parameterNode.colourTable = node

    def onAdvancedCollapsed(self, collapsed) -> None:
        if not collapsed:
            self._listFusionRulesAndDevices()

    def _listFusionRulesAndDevices(self) -> None:
        """Fill the fusion rules and name the GPU; needs torch, so only once it is installed."""
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            self.ui.deviceInfoLabel.text = _("PyTorch is set up on the first Apply.")
            return
        environment.ensure_library_importable()
        from EdgeFusionLib.fusion.engine import available_devices
        from EdgeFusionLib.fusion.methods import method_names

        with _NoSignals(self.ui.fusionRuleComboBox):
            for name in method_names():
                if self.ui.fusionRuleComboBox.findData(name) < 0:
                    self.ui.fusionRuleComboBox.addItem(name, name)
        gpus = [entry["name"] for entry in available_devices() if entry["device"].startswith("cuda")]
        self.ui.deviceInfoLabel.text = (_("GPU: ") + ", ".join(gpus)) if gpus else _("No CUDA GPU found: the CPU is used.")

    def onOpacityChanged(self, value) -> None:
        if self._shownResult():
            self.logic.set_foreground_opacity(value)

    def onFusedOnTopToggled(self, fusedOnTop) -> None:
        shown = self._shownResult()
        if shown:
            self.logic.show_result(*shown, fused_on_top=fusedOnTop, opacity=self._parameterNode.opacity, fit_views=False)

    def _shownResult(self):
        """(MRI node, fused node) of the last run while the slice views show them, else None.

        Display changes only views that show the result: reopening a scene writes the saved
        Display values into the widgets, and that must not override views the user set up since.
        """
        parameters = self._parameterNode
        if parameters is None or parameters.resultMriVolume is None or parameters.resultVolume is None:
            return None
        nodes = parameters.resultMriVolume, parameters.resultVolume
        composite = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceCompositeNode()
        shown = {composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID()}
        return nodes if shown == {node.GetID() for node in nodes} else None

    # ---------------------------------------------------------------- running

    def onApplyButton(self) -> None:
        if self._run is not None:
            self._cancelRun(waitForWorker=False)
            return
        environment.ensure_library_importable()
        from EdgeFusionLib.errors import InputError

        try:
            if not self._ensureDependencies():
                return
            with slicer.util.WaitCursor():
                job = self._prepareJob()
                self._startRun(job)
        except InputError as error:
            slicer.util.errorDisplay(str(error))
        except Exception as error:
            logging.exception("EdgeFusion could not start")
            slicer.util.errorDisplay(_("EdgeFusion could not start: ") + str(error))

    def _prepareJob(self):
        parameters = self._parameterNode
        return self.logic.prepare(
            parameters.mriVolume,
            parameters.otherVolume,
            parameters.modality,
            method=parameters.fusionRule or None,
            axis=self.logic.axis_for_plane(parameters.mriVolume, parameters.slicePlane.value),
            device=parameters.device.value,
            batch_size=parameters.batchSize or None,
            colour_node=parameters.colourTable,
            output_node=parameters.outputVolume,
        )

    def _startRun(self, job) -> None:
        """Start the fusion in a PythonSlicer process; the poll timer follows it."""
        run = BackgroundFusion(
            job,
            python_executable=shutil.which("PythonSlicer") or sys.executable,
            launch=slicer.util.launchConsoleProcess,  # Slicer's environment, no console window on Windows
            work_folder=slicer.app.temporaryPath,
            log=logging.info,
        )
        run.start()  # raises (leaving nothing behind) if the worker cannot be started
        self._run = run
        self._runStartTime = time.monotonic()
        self._setInputsEnabled(False)
        self.ui.progressBar.setRange(0, 0)  # busy until the worker reports the number of slices
        self.ui.progressBar.show()
        self.ui.statusLabel.text = _("Starting...")
        self._updateApplyButton()
        self._pollTimer.start()

    def _onPollTimer(self) -> None:
        run = self._run
        if run is None:
            self._pollTimer.stop()
            return
        status = run.poll()
        if status.slices_total:
            self.ui.progressBar.setRange(0, status.slices_total)
            self.ui.progressBar.value = status.slices_done
            self.ui.statusLabel.text = _("Fusing on {device}...").format(device=status.device_name or status.device)
        if status.is_over:
            self._finishRun(run, status)

    def _finishRun(self, run, status) -> None:
        self._pollTimer.stop()
        self._run = None
        seconds = time.monotonic() - self._runStartTime
        try:
            if status.state == "finished":
                device = f"{status.device_name} ({status.device})" if status.device_name != status.device else status.device
                fusedNode = self.logic.finish(run.job, run.result(), {"Device": device, "Seconds": f"{seconds:.1f}"})
                mriNode = slicer.mrmlScene.GetNodeByID(run.job.mri_node_id)
                self._showResult(mriNode, fusedNode)
                self.ui.statusLabel.text = _("'{name}' made in {seconds:.1f} s on {device}.").format(name=fusedNode.GetName(), seconds=seconds, device=device)
            elif status.state == "cancelled":
                self.ui.statusLabel.text = _("Cancelled; the scene was not changed.")
            else:
                self.ui.statusLabel.text = _("Failed: ") + status.message
                slicer.util.errorDisplay(status.message)
        except Exception as error:
            logging.exception("EdgeFusion could not add the result")
            self.ui.statusLabel.text = _("Failed: ") + str(error)
            slicer.util.errorDisplay(str(error))
        finally:
            run.close()
            self.ui.progressBar.hide()
            self._setInputsEnabled(True)
            if self._parameterNode is not None:
                self._updateApplyButton()

    def _cancelRun(self, waitForWorker: bool) -> None:
        run = self._run
        if run is None:
            return
        run.cancel()
        self._updateApplyButton()
        if waitForWorker:  # closing or reloading: do not leave the worker behind
            self._pollTimer.stop()
            self._run = None
            run.close()
            self.ui.progressBar.hide()
            self._setInputsEnabled(True)

    def _setInputsEnabled(self, enabled: bool) -> None:
        for widget in (self.ui.inputsCollapsibleButton, self.ui.outputsCollapsibleButton, self.ui.advancedCollapsibleButton):
            widget.enabled = enabled

    def _showResult(self, mriNode, fusedNode) -> None:
        parameters = self._parameterNode
        parameters.resultMriVolume, parameters.resultVolume = mriNode, fusedNode
        self.logic.show_result(mriNode, fusedNode, fused_on_top=parameters.fusedOnTop, opacity=parameters.opacity, fit_views=True)

    def _ensureDependencies(self) -> bool:
        """Install torch (PyTorch extension) and the other requirements, asking the user first."""
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            slicer.util.errorDisplay(_("EdgeFusion needs the PyTorch extension. Install \"PyTorch\" in the Extensions Manager, restart Slicer and press Apply again."))
            return False
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            # installTorch shows its own confirmation dialog and returns None if the user declines.
            torch = torchLogic.installTorch(askConfirmation=True, torchVersionRequirement=f">={MINIMUM_TORCH_VERSION}")
            if torch is None:
                return False
        missing = dependencies.missing_requirements(dependencies.read_requirements(self.resourcePath("requirements.txt")))
        if missing:
            if not slicer.util.confirmOkCancelDisplay(_("EdgeFusion needs these Python packages, which will be installed now:") + "\n\n" + "\n".join(missing)):
                return False
            with slicer.util.WaitCursor():
                slicer.util.pip_install(missing)
        return True


def _idOf(node) -> Optional[str]:
    return node.GetID() if node is not None else None


class _NoSignals:
    """Block the Qt signals of some widgets while the GUI is updated from the parameter node."""

    def __init__(self, *widgets):
        self.widgets = widgets

    def __enter__(self):
        self.previous = [widget.blockSignals(True) for widget in self.widgets]

    def __exit__(self, *exception):
        for widget, previous in zip(self.widgets, self.previous):
            widget.blockSignals(previous)


#
# EdgeFusionLogic
#


class EdgeFusionLogic(ScriptedLoadableModuleLogic, VolumeFusionLogic):
    """Fusion without the GUI, in the application's scene. For batch scripts::

        logic = slicer.util.getModuleLogic("EdgeFusion")
        fusedNode = logic.fuse(mriNode, ctNode, "ct")            # waits until done
        logic.show_result(mriNode, fusedNode, opacity=0.5)

    ``fuse``, ``validate_inputs``, ``guess_modality``, ``prepare``/``run``/``finish``,
    ``show_result`` and ``set_foreground_opacity`` come from
    ``EdgeFusionMRML.logic.VolumeFusionLogic``; see there for the arguments.
    """

    def __init__(self) -> None:
        # ScriptedLoadableModuleLogic.__init__ calls super().__init__(), which initialises
        # VolumeFusionLogic with its defaults (the scene is slicer.mrmlScene).
        ScriptedLoadableModuleLogic.__init__(self)
        self.application_logic = slicer.app.applicationLogic()  # its slice logics are used to fit the views

    def getParameterNode(self):
        return EdgeFusionParameterNode(super().getParameterNode())


#
# EdgeFusionTest
#


class EdgeFusionTest(ScriptedLoadableModuleTest):
    """Self-test on the sample phantoms: mostly pixel rules (fast), and the default rule with the bundled weights."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self._ensureTorch()
        for test in (
            self.test_CtFusionHasMriGeometry,
            self.test_DefaultRuleWithBundledWeights,
            self.test_ScalarSpectWithColourTableGivesRgb,
            self.test_CancelLeavesSceneUnchanged,
            self.test_BadInputsCreateNothing,
            self.test_BackgroundProcessMatchesInProcess,
        ):
            self.setUp()
            test()

    def _ensureTorch(self):
        """EdgeFusionLib needs torch even for the pixel rules (device selection): install it without asking."""
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            self.delayDisplay("Installing PyTorch for the test (PyTorch extension)")
            import PyTorchUtils

            self.assertIsNotNone(PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False, torchVersionRequirement=f">={MINIMUM_TORCH_VERSION}"))
        from EdgeFusionMRML import dependencies

        missing = dependencies.missing_requirements(dependencies.read_requirements(os.path.join(os.path.dirname(__file__), "Resources", "requirements.txt")))
        if missing:
            slicer.util.pip_install(missing)

    def _loadPhantom(self, nodeName):
        from EdgeFusionMRML import sampledata

        return slicer.util.loadVolume(str(sampledata.sample_file(nodeName)), {"name": nodeName})

    def _nodeIds(self):
        return [slicer.mrmlScene.GetNthNode(index).GetID() for index in range(slicer.mrmlScene.GetNumberOfNodes())]

    def test_CtFusionHasMriGeometry(self):
        self.delayDisplay("MRI + CT with a different grid")
        import numpy as np

        mri, ct = self._loadPhantom("EdgeFusionPhantom-MRI"), self._loadPhantom("EdgeFusionPhantom-CT")
        logic = EdgeFusionLogic()
        self.assertEqual(logic.guess_modality(ct).modality.name, "ct")
        fused = logic.fuse(mri, ct, "ct", method="pixel-average")
        self.assertEqual(fused.GetClassName(), "vtkMRMLScalarVolumeNode")
        self.assertEqual(fused.GetImageData().GetDimensions(), mri.GetImageData().GetDimensions())
        mriMatrix, fusedMatrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        mri.GetIJKToRASMatrix(mriMatrix)
        fused.GetIJKToRASMatrix(fusedMatrix)
        np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(fusedMatrix), slicer.util.arrayFromVTKMatrix(mriMatrix))
        values = slicer.util.arrayFromVolume(fused)
        self.assertTrue(0.0 <= values.min() and values.max() <= 1.0 and values.max() > 0.5)
        logic.show_result(mri, fused, opacity=0.6)
        composite = slicer.app.layoutManager().sliceWidget("Red").mrmlSliceCompositeNode()
        self.assertEqual((composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID()), (mri.GetID(), fused.GetID()))
        self.assertAlmostEqual(composite.GetForegroundOpacity(), 0.6)
        self.delayDisplay("Test passed")

    def test_DefaultRuleWithBundledWeights(self):
        self.delayDisplay("MRI + CT with the default rule and the bundled weights")
        import numpy as np

        mri, ct = self._loadPhantom("EdgeFusionPhantom-MRI"), self._loadPhantom("EdgeFusionPhantom-CT")
        logic = EdgeFusionLogic()
        fused = slicer.util.arrayFromVolume(logic.fuse(mri, ct, "ct"))
        highest = slicer.util.arrayFromVolume(logic.fuse(mri, ct, "ct", method="pixel-max"))
        lowest = 2 * slicer.util.arrayFromVolume(logic.fuse(mri, ct, "ct", method="pixel-average")) - highest
        # The MRI-CT default takes every pixel from one of the two sources.
        self.assertTrue(np.all(fused >= lowest - 1e-5) and np.all(fused <= highest + 1e-5))
        self.assertGreater(np.mean(fused != highest), 0.01)  # and not simply the brighter one everywhere
        self.delayDisplay("Test passed")

    def test_ScalarSpectWithColourTableGivesRgb(self):
        self.delayDisplay("MRI + greyscale SPECT through PET-Heat")
        mri, spect = self._loadPhantom("EdgeFusionPhantom-MRI"), self._loadPhantom("EdgeFusionPhantom-SPECT")
        logic = EdgeFusionLogic()
        self.assertEqual(logic.guess_modality(spect).modality.name, "spect")
        fused = logic.fuse(mri, spect, "spect", method="pixel-average", colour_node=slicer.util.getNode("PET-Heat"))
        self.assertEqual(fused.GetClassName(), "vtkMRMLVectorVolumeNode")
        self.assertEqual(fused.GetImageData().GetNumberOfScalarComponents(), 3)
        self.assertEqual(fused.GetImageData().GetScalarTypeAsString(), "unsigned char")
        self.delayDisplay("Test passed")

    def test_CancelLeavesSceneUnchanged(self):
        self.delayDisplay("Cancel")
        from EdgeFusionLib.errors import FusionCancelled

        mri, ct = self._loadPhantom("EdgeFusionPhantom-MRI"), self._loadPhantom("EdgeFusionPhantom-CT")
        before = self._nodeIds()
        with self.assertRaises(FusionCancelled):
            EdgeFusionLogic().fuse(mri, ct, "ct", method="pixel-average", cancel=lambda: True)
        self.assertEqual(self._nodeIds(), before)
        self.delayDisplay("Test passed")

    def test_BadInputsCreateNothing(self):
        self.delayDisplay("Bad inputs")
        from EdgeFusionLib.errors import InputError

        mri = self._loadPhantom("EdgeFusionPhantom-MRI")
        labelMap = slicer.modules.volumes.logic().CreateAndAddLabelVolume(mri, "labels")
        logic = EdgeFusionLogic()
        before = self._nodeIds()
        for other, expected in ((None, "Select"), (mri, "same volume"), (labelMap, "label map")):
            self.assertIn(expected, logic.validate_inputs(mri, other, "ct"))
            if other is not None:
                with self.assertRaises(InputError):
                    logic.fuse(mri, other, "ct", method="pixel-average")
        self.assertEqual(self._nodeIds(), before)
        self.delayDisplay("Test passed")

    def test_BackgroundProcessMatchesInProcess(self):
        self.delayDisplay("Fusion in a PythonSlicer process")
        import numpy as np

        mri, ct = self._loadPhantom("EdgeFusionPhantom-MRI"), self._loadPhantom("EdgeFusionPhantom-CT")
        logic = EdgeFusionLogic()
        job = logic.prepare(mri, ct, "ct", method="pixel-max")
        run = BackgroundFusion(job, python_executable=shutil.which("PythonSlicer") or sys.executable,
                               launch=slicer.util.launchConsoleProcess, work_folder=slicer.app.temporaryPath)
        try:
            run.start()
            while not run.poll().is_over:
                slicer.app.processEvents()
                time.sleep(0.05)
            self.assertEqual(run.status.state, "finished", run.status.message)
            background = logic.finish(job, run.result())
        finally:
            run.close()
        inProcess = logic.fuse(mri, ct, "ct", method="pixel-max")
        np.testing.assert_allclose(slicer.util.arrayFromVolume(background), slicer.util.arrayFromVolume(inProcess), atol=1e-6)
        self.delayDisplay("Test passed")
