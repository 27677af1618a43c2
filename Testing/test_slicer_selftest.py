"""EdgeFusion.py's own code on the real MRML libraries: its logic class and its self-test (EdgeFusionTest).

``slicer-core`` has Slicer's MRML and logic libraries but not the Qt application, so
what EdgeFusion.py imports from it is replaced here by minimal stand-ins: ``qt``,
``ctk``, the ScriptedLoadableModule base classes, ``slicer.parameterNodeWrapper``,
``slicer.i18n`` and the few ``slicer.app`` / ``slicer.util`` calls the self-test
makes (loading a file, the Red view's composite node). Everything the self-test
checks (fusion, geometry, colour, cancel, bad inputs, the background process) runs
for real. The panel itself (EdgeFusionWidget) is a thin Qt binding of
``EdgeFusionMRML.controller.FusionController``, whose behaviour Testing/test_controller.py
tests; here only its parameter node is checked to fit the controller.
"""

from __future__ import annotations

import importlib
import sys
import types
import unittest
from unittest import mock

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="Slicer's MRML libraries (pip install slicer-core) are not installed")

from edgefusion_slicer_support import make_slicer_scene  # noqa: E402

from EdgeFusionMRML.background import default_launch  # noqa: E402
from EdgeFusionMRML.logic import VolumeFusionLogic  # noqa: E402


class ScriptedLoadableModuleLogicStandIn:
    """Like Slicer's: cooperative ``__init__`` and the module name from the class name."""

    def __init__(self, parent=None):
        super().__init__()
        self.moduleName = type(self).__name__.removesuffix("Logic")


class ScriptedLoadableModuleTestStandIn(unittest.TestCase):
    __test__ = False  # a base class for EdgeFusionTest, not a test of its own

    def delayDisplay(self, message, msec=None):
        pass

    def runTest(self):  # replaced by EdgeFusionTest.runTest
        pass


def stand_in_modules() -> dict[str, types.ModuleType]:
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = lambda cls: cls
    wrapper.Choice = lambda choices: ("Choice", tuple(choices))
    wrapper.WithinRange = lambda low, high: ("WithinRange", low, high)
    base = types.ModuleType("slicer.ScriptedLoadableModule")
    base.ScriptedLoadableModule = base.ScriptedLoadableModuleWidget = type("GuiStandIn", (), {"__init__": lambda self, *args: None})
    base.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogicStandIn
    base.ScriptedLoadableModuleTest = ScriptedLoadableModuleTestStandIn
    return {"qt": mock.MagicMock(), "ctk": mock.MagicMock(), "slicer.i18n": i18n,
            "slicer.parameterNodeWrapper": wrapper, "slicer.ScriptedLoadableModule": base}


@pytest.fixture
def edgefusion(monkeypatch, tmp_path):
    """(EdgeFusion module imported with the stand-ins, the Slicer-like scene it works in)."""
    app = make_slicer_scene()
    for name, module in stand_in_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    application = mock.MagicMock()
    application.applicationLogic.return_value = app.application_logic
    application.temporaryPath = str(tmp_path)
    application.layoutManager.return_value.sliceWidget.side_effect = lambda view: mock.Mock(
        mrmlSliceCompositeNode=app.slice_logics[view].GetSliceCompositeNode)
    monkeypatch.setattr(slicer, "app", application, raising=False)
    monkeypatch.setattr(slicer, "modules", mock.Mock(volumes=mock.Mock(logic=lambda: app.volumes_logic)), raising=False)
    monkeypatch.setattr(slicer.util, "loadVolume", lambda path, properties: app.volumes_logic.AddArchetypeVolume(path, properties["name"]))
    monkeypatch.setattr(slicer.util, "launchConsoleProcess", default_launch)  # Slicer's needs the application
    monkeypatch.delitem(sys.modules, "EdgeFusion", raising=False)
    module = importlib.import_module("EdgeFusion")
    yield module, app
    sys.modules.pop("EdgeFusion", None)


def test_module_logic_fits_the_application_views(edgefusion):
    module, app = edgefusion
    logic = module.EdgeFusionLogic()
    assert isinstance(logic, VolumeFusionLogic) and logic.scene is app.scene
    # show_result fits the views through the application's slice logics.
    mri = app.add_volume(np.zeros((4, 40, 30), np.float32) + np.arange(30, dtype=np.float32), np.diag([2.0, 2.0, 5.0, 1.0]))
    fused = app.add_volume(np.ones((4, 40, 30), np.float32), np.diag([2.0, 2.0, 5.0, 1.0]))
    logic.show_result(mri, fused, opacity=0.3)
    red = app.slice_logics["Red"]
    assert red.GetSliceCompositeNode().GetForegroundVolumeID() == fused.GetID()
    assert max(red.GetSliceNode().GetFieldOfView()[:2]) == pytest.approx(80.0)  # fitted to the MRI's 40 rows x 2 mm


def test_the_parameter_node_can_be_the_controllers_settings(edgefusion):
    """The panel hands its parameter node to FusionController as its settings: same fields, same defaults,
    and every choice its selectors offer is one the controller and the logic accept."""
    import dataclasses

    from EdgeFusionLib.devices import DEVICE_CHOICES
    from EdgeFusionLib.modality import MODALITIES
    from EdgeFusionMRML.controller import PARAMETER_NODE_FIELDS, SLICE_PLANES, FusionSettings, choice_value

    module, app = edgefusion
    parameters = module.EdgeFusionParameterNode
    assert tuple(parameters.__annotations__) == PARAMETER_NODE_FIELDS
    defaults = {field.name: field.default for field in dataclasses.fields(FusionSettings)}
    for name in PARAMETER_NODE_FIELDS:
        if hasattr(parameters, name):  # node fields have no default
            assert choice_value(getattr(parameters, name)) == defaults[name], name
    modality_choices = parameters.__annotations__["modality"].__metadata__[0][1]
    assert list(modality_choices) == [entry.label for entry in MODALITIES.values()]
    assert [plane.value for plane in module.SlicePlane] == list(SLICE_PLANES)
    assert {device.value for device in module.ComputeDevice} <= set(DEVICE_CHOICES)
    # Every slice plane maps to the right axis of an axial MRI.
    mri = app.add_volume(np.zeros((4, 5, 6), np.float32), np.diag([1.0, 1.0, 5.0, 1.0]))
    axes = {plane: module.EdgeFusionLogic().axis_for_plane(mri, choice_value(plane)) for plane in module.SlicePlane}
    assert axes == {module.SlicePlane.AUTOMATIC: None, module.SlicePlane.AXIAL: 0, module.SlicePlane.CORONAL: 1,
                    module.SlicePlane.SAGITTAL: 2}


def test_the_module_self_test_passes(edgefusion):
    module, app = edgefusion
    module.EdgeFusionTest().runTest()
    assert app.scene.GetFirstNodeByName("PET-Heat") is not None
