"""EdgeFusion: fuse an MRI with a CT, SPECT or PET volume in 3D Slicer (EH-DRAN network).

Layout (the Extension Wizard's scripted-module template):

* ``EdgeFusion``: module description, registration of the sample data;
* ``EdgeFusionParameterNode``: the panel's state, saved with the scene;
* ``EdgeFusionWidget``: the panel (``Resources/UI/EdgeFusion.ui``), a thin Qt binding of
  ``EdgeFusionMRML.controller.FusionController`` (state and behaviour, shared with the web app);
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
from EdgeFusionMRML.controller import DEFAULT_RULE_LABEL, FusionController, FusionSettings, device_summary, fusion_rule_choices
from EdgeFusionMRML.logic import VolumeFusionLogic

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
    register - align the second volume to the MRI first: 'auto' (by the rule), 'none', 'rigid' or 'affine'.
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
    register: str = "auto"  # checked by the controller against EdgeFusionLib.registration.REGISTRATION_CHOICES
    fusedOnTop: bool = True
    opacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5
    resultMriVolume: vtkMRMLScalarVolumeNode
    resultVolume: Union[vtkMRMLScalarVolumeNode, vtkMRMLVectorVolumeNode, None]


#
# EdgeFusionWidget
#


class EdgeFusionWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: a binding of ``EdgeFusionMRML.controller.FusionController`` to Qt widgets.

    The parameter node is the controller's settings (same field names); Qt signals call the
    controller, and :meth:`_render` shows its ``view()``. What is valid, what Apply does, what is
    enabled when, and the status line are the controller's, tested in CI without Qt.
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)  # needed for parameter node observation
        self.logic = None
        self.controller = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._pollTimer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/EdgeFusion.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = EdgeFusionLogic()
        self.controller = FusionController(self.logic, FusionSettings(), run_factory=self._backgroundFusion)

        self.ui.progressBar.hide()
        self.ui.fusionRuleComboBox.addItem(_(DEFAULT_RULE_LABEL), "")
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(PROGRESS_POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self._onPollTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndImportEvent, self.onSceneEndImport)

        # Widgets that the parameter node wrapper cannot bind by themselves.
        self.ui.fusionRuleComboBox.connect("currentIndexChanged(int)", self.onFusionRuleChanged)
        self.ui.colourTableSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onColourTableChanged)
        self.ui.alignCheckBox.connect("toggled(bool)", self.onAlignToggled)
        self.ui.advancedCollapsibleButton.connect("contentsCollapsed(bool)", self.onAdvancedCollapsed)
        # Live display controls.
        self.ui.opacitySliderWidget.connect("valueChanged(double)", self.controller.set_opacity)
        self.ui.fusedOnTopCheckBox.connect("toggled(bool)", self.controller.set_fused_on_top)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._stopRun()
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
        self._stopRun()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def onSceneEndImport(self, caller, event) -> None:
        # A loaded scene brings its own modality for its second volume: nothing to guess.
        if self._parameterNode is not None:
            self.controller.remember_other_volume()

    def onReload(self) -> None:
        """Reload EdgeFusionLib and EdgeFusionMRML too, so code changes in them take effect."""
        self._stopRun()
        environment.reload_edgefusion_modules()
        super().onReload()

    # ---------------------------------------------------------------- parameter node

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        self.controller.select_default_inputs()

    def setParameterNode(self, inputParameterNode: Optional[EdgeFusionParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self.controller.adopt(self._parameterNode)  # its saved modality stands
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None) -> None:
        if self._parameterNode is not None:
            self.controller.settings_changed()
            self._render()

    def _render(self) -> None:
        """Show the controller's view: what the wrapper does not bind, enabled states, Apply, progress, status."""
        parameters, view = self._parameterNode, self.controller.view()
        with _NoSignals(self.ui.fusionRuleComboBox, self.ui.colourTableSelector, self.ui.alignCheckBox):
            index = self.ui.fusionRuleComboBox.findData(parameters.fusionRule)
            if index < 0:  # a rule saved in the scene but not listed yet: list it
                self.ui.fusionRuleComboBox.addItem(parameters.fusionRule, parameters.fusionRule)
                index = self.ui.fusionRuleComboBox.count - 1
            self.ui.fusionRuleComboBox.currentIndex = index
            self.ui.colourTableSelector.setCurrentNode(parameters.colourTable)
            self.ui.alignCheckBox.checked = view.align_checked
        self.ui.alignCheckBox.toolTip = view.align_tooltip
        self.ui.colourTableSelector.enabled = self.ui.colourTableLabel.enabled = view.colour_table_enabled
        self.ui.applyButton.text = _(view.apply_text)
        self.ui.applyButton.enabled = view.apply_enabled
        self.ui.applyButton.toolTip = _(view.apply_tooltip)
        for widget in (self.ui.inputsCollapsibleButton, self.ui.outputsCollapsibleButton, self.ui.advancedCollapsibleButton):
            widget.enabled = view.inputs_enabled
        self.ui.progressBar.visible = view.progress is not None
        if view.progress is not None:
            done, total = view.progress
            self.ui.progressBar.setRange(0, total)  # (0, 0): busy until the worker reports the number of slices
            self.ui.progressBar.value = done
        self.ui.statusLabel.text = view.status

    # ---------------------------------------------------------------- GUI events

    def onFusionRuleChanged(self, index) -> None:
        if self._parameterNode is not None and index >= 0:
            self._parameterNode.fusionRule = self.ui.fusionRuleComboBox.itemData(index) or ""

    def onAlignToggled(self, checked) -> None:
        if self._parameterNode is not None:
            self.controller.set_align(checked)

    def onColourTableChanged(self, node) -> None:
        if self._parameterNode is not None:
            self._parameterNode.colourTable = node

    def onAdvancedCollapsed(self, collapsed) -> None:
        if collapsed:
            return
        # The rules and devices are listed by EdgeFusionLib, which needs torch: only once it is installed.
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            self.ui.deviceInfoLabel.text = _("PyTorch is set up on the first Apply.")
            return
        with _NoSignals(self.ui.fusionRuleComboBox):
            for value, label in fusion_rule_choices()[1:]:
                if self.ui.fusionRuleComboBox.findData(value) < 0:
                    self.ui.fusionRuleComboBox.addItem(value, value)
                    self.ui.fusionRuleComboBox.setItemData(self.ui.fusionRuleComboBox.count - 1, label, qt.Qt.ToolTipRole)
        self.ui.deviceInfoLabel.text = device_summary()

    # ---------------------------------------------------------------- running

    def onApplyButton(self) -> None:
        environment.ensure_library_importable()
        from EdgeFusionLib.errors import InputError

        try:
            if self.controller.running or self._ensureDependencies():
                with slicer.util.WaitCursor():
                    self.controller.apply()  # starts a fusion, or cancels the one that runs
                self._pollTimer.start()
        except InputError as error:
            slicer.util.errorDisplay(str(error))
        except Exception as error:
            logging.exception("EdgeFusion could not start")
            slicer.util.errorDisplay(_("EdgeFusion could not start: ") + str(error))
        self._render()

    def _backgroundFusion(self, job) -> BackgroundFusion:
        """The worker runs in a PythonSlicer process, with Slicer's environment and temporary folder."""
        return BackgroundFusion(
            job,
            python_executable=shutil.which("PythonSlicer") or sys.executable,
            launch=slicer.util.launchConsoleProcess,  # Slicer's environment, no console window on Windows
            work_folder=slicer.app.temporaryPath,
            log=logging.info,
        )

    def _onPollTimer(self) -> None:
        end = self.controller.poll()
        if not self.controller.running:
            self._pollTimer.stop()
        if self._parameterNode is not None:
            self._render()
        if end is not None and end.state == "failed":
            slicer.util.errorDisplay(end.message)

    def _stopRun(self) -> None:
        """Closing or reloading: stop the worker for good, do not leave it behind."""
        if self._pollTimer is not None:
            self._pollTimer.stop()
        if self.controller is not None:
            self.controller.stop()

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
            self.test_AlignFirstOnTheRealScannerPair,
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

    def test_AlignFirstOnTheRealScannerPair(self):
        self.delayDisplay("Align the MRI-DIR CT to its T2 MRI, then fuse")
        import numpy as np

        t2, ct = self._loadPhantom("MRIDIR-Porcine-MR-T2"), self._loadPhantom("MRIDIR-Porcine-CT")
        logic = EdgeFusionLogic()
        self.assertEqual(logic.registration_choice(t2, ct)[0], "rigid")  # two scanners, no shared frame
        ctVoxels = slicer.util.arrayFromVolume(ct).copy()
        fused = logic.fuse(t2, ct, "ct", method="pixel-max", registration="auto")
        self.assertIsNone(ct.GetTransformNodeID())  # the input is untouched
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(ct), ctVoxels)
        transform = slicer.util.getNode("MRIDIR-Porcine-CT to MRIDIR-Porcine-MR-T2 (registration)")
        aligned = slicer.util.getNode("MRIDIR-Porcine-CT (aligned)")
        self.assertEqual(aligned.GetTransformNodeID(), transform.GetID())
        # The scanners place this CT turned by about 180 degrees about the anterior-posterior axis.
        self.assertIn("rotation 17", fused.GetAttribute("EdgeFusion.Registration"))
        # The same transform as the library finds on the sample files (Slicer's RAS vs ITK's LPS handled).
        import SimpleITK as sitk

        from EdgeFusionLib.registration import register
        from EdgeFusionMRML import sampledata, volumes

        expected = register(sitk.ReadImage(str(sampledata.sample_file("MRIDIR-Porcine-MR-T2"))),
                            sitk.ReadImage(str(sampledata.sample_file("MRIDIR-Porcine-CT"))), "rigid")
        fromParent = vtk.vtkMatrix4x4()
        transform.GetMatrixTransformFromParent(fromParent)
        np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(fromParent),
                                   volumes.ras_matrix_of_sitk_transform(expected.transform), atol=1e-3)
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
