"""The web app of one browser session: the EdgeFusion panel beside Slicer's Red/Yellow/Green slice views.

A trame application on trame-slicer: the scene, the slice views (Slicer's own slice logic and
displayable managers, rendered offscreen and streamed as pictures) and, on the left, a panel
bound to ``EdgeFusionMRML.controller.FusionController``, the same controller the Slicer panel
binds to. The panel decides nothing: it writes the user's choices into the controller's
settings and shows ``controller.view()``.

Every state name the page uses starts with ``ef_``; tests and the benchmark read the page
through the ``data-testid`` attributes.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from pathlib import Path

from slicer import vtkMRMLModelSliceDisplayableManager
from vtkmodules.vtkCommonCore import vtkCommand
from trame.app import TrameApp
from trame.widgets import client, html
from trame_server.utils.asynchronous import create_task
from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout
from trame_vuetify.widgets import vuetify3 as v3

from trame_slicer import module as trame_slicer_module
from trame_slicer.app.logic.slice_view_logic import connect_slice_view_slider_to_state
from trame_slicer.app.ui.slider import Slider
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

from EdgeFusionLib.devices import DEVICE_CHOICES
from EdgeFusionLib.errors import InputError
from EdgeFusionLib.modality import MODALITIES
from EdgeFusionMRML import sampledata, volumes
from EdgeFusionMRML.background import BackgroundFusion
from EdgeFusionMRML.controller import (
    SLICE_PLANES,
    FusionController,
    FusionSettings,
    device_summary,
    fusion_rule_choices,
    node_id,
)
from EdgeFusionMRML.logic import VolumeFusionLogic

from . import uploads

#: The view that shows the MRI alone in the comparison layout (beside the Red view with the fusion).
MRI_ALONE_VIEW = "MRI"
#: Page layouts: name -> how the slice views are arranged.
LAYOUTS = {
    "Three planes": lambda: Layout(LayoutDirection.Horizontal, [
        ViewLayoutDefinition.axial_view(), ViewLayoutDefinition.sagittal_view(), ViewLayoutDefinition.coronal_view()]),
    "Compare: MRI | fused": lambda: Layout(LayoutDirection.Horizontal, [
        ViewLayoutDefinition.axial_view(label=MRI_ALONE_VIEW), ViewLayoutDefinition.axial_view()]),
}
#: How often the page checks on a running fusion (seconds).
POLL_INTERVAL_S = 0.2
#: The sample pairs offered, by the node names of ``Resources/SampleData/sampledata.json``.
SAMPLE_PAIRS = {
    "MRI + CT phantom": ("EdgeFusionPhantom-MRI", "EdgeFusionPhantom-CT"),
    "MRI + SPECT phantom": ("EdgeFusionPhantom-MRI", "EdgeFusionPhantom-SPECT"),
    "T2 MRI + CT, porcine head (real scanners, not aligned)": ("MRIDIR-Porcine-MR-T2", "MRIDIR-Porcine-CT"),
}
#: Colour tables offered for a greyscale SPECT/PET (those of Slicer's defaults that suit nuclear medicine).
COLOUR_TABLE_NAMES = ("PET-Heat", "PET-Rainbow2", "PET-DICOM", "PET-MIP", "Inferno", "Magma", "Plasma", "Viridis",
                      "Rainbow", "Grey")
#: Download formats: label -> file ending.
DOWNLOAD_FORMATS = {"NRRD": ".nrrd", "NIfTI": ".nii.gz"}
PLANE_LABELS = {"auto": "Automatic (acquisition plane)", "axial": "Axial", "coronal": "Coronal", "sagittal": "Sagittal"}

#: Settings fields bound to a page state of the same meaning: state name -> (field, holds a node).
BOUND_SETTINGS = {
    "ef_mri_id": ("mriVolume", True),
    "ef_other_id": ("otherVolume", True),
    "ef_modality": ("modality", False),
    "ef_rule": ("fusionRule", False),
    "ef_plane": ("slicePlane", False),
    "ef_device": ("device", False),
    "ef_batch_size": ("batchSize", False),
    "ef_colour_id": ("colourTable", True),
}


def slice_slider_only(server, view_id, view) -> None:
    """The gutter of a slice view: only the slider that scrolls through the slices."""
    with html.Div(style="position: absolute; bottom: 0; left: 0; width: 100%;", classes="slice-slider-gutter"):
        Slider(classes="slice-slider", typed_state=connect_slice_view_slider_to_state(server, view), theme="dark", dense=True)


class EdgeFusionWebApp(TrameApp):
    """One session: its own scene, views, controller and private folder.

    :param work_folder: the session's private folder (uploads, worker jobs, downloads); the
        caller creates it (mode 0700) and removes it when the session ends.
    :param max_upload_bytes: the largest file (or unpacked zip) accepted.
    """

    def __init__(self, server=None, work_folder: Path | None = None, max_upload_bytes: int = uploads.DEFAULT_MAX_UPLOAD_BYTES):
        super().__init__(server)
        self.work_folder = Path(work_folder or tempfile.mkdtemp(prefix="EdgeFusionApp-"))
        self.max_upload_bytes = max_upload_bytes
        self.server.enable_module(trame_slicer_module)

        self.slicer = SlicerApp()
        register_rca_factories(self.slicer.view_manager, self.server, slice_view_ui_f=slice_slider_only)
        self.layout_manager = LayoutManager(self.slicer.scene, self.slicer.view_manager, self.server)
        self.layout_manager.register_layout_dict({name: layout() for name, layout in LAYOUTS.items()})
        self.layout_manager.set_layout(next(iter(LAYOUTS)))
        self._linking = False
        for view in self.slicer.view_manager.get_slice_views():
            view.modified.connect(self._on_view_modified)
            view.render_window().SetOffScreenRendering(1)  # no display here: render into an offscreen buffer
            # The page shows volumes, no models. The model displayable manager redrew every view whenever one
            # view's slice moved (the slice-plane models change), which tripled the cost of a slider move;
            # without it, a view is redrawn when its own slice logic changes (layers, opacity, slice, window).
            view.get_displayable_manager_by_class(vtkMRMLModelSliceDisplayableManager).SetMRMLScene(None)
            self.slice_logic(view).AddObserver(vtkCommand.ModifiedEvent, lambda *_, view=view: view.schedule_render())

        self.logic = VolumeFusionLogic(self.slicer.scene, self.slicer.app_logic)
        self.controller = FusionController(self.logic, FusionSettings(), run_factory=self._background_fusion)
        self._poll_task = None
        self._initial_state()
        self._bind_state()
        self._build_ui()
        self.server.controller.on_server_exited.add(lambda **_: self.controller.stop())

    def slice_logic(self, view):
        """The vtkMRMLSliceLogic that draws a slice view (its blended image is the view's picture)."""
        return self.slicer.app_logic.GetSliceLogicByLayoutName(view.name)

    # ---------------------------------------------------------------- state <-> controller

    def _initial_state(self) -> None:
        state = self.state
        state.trame__title = "EdgeFusion"
        state.ef_sample = next(iter(SAMPLE_PAIRS))
        state.ef_volume_items = []
        state.ef_modality_items = [entry.label for entry in MODALITIES.values()]
        state.ef_rule_items = [{"title": label, "value": value} for value, label in fusion_rule_choices()]
        state.ef_plane_items = [{"title": PLANE_LABELS[plane], "value": plane} for plane in SLICE_PLANES]
        state.ef_device_items = [device for device in DEVICE_CHOICES if device != "mps"]
        state.ef_device_info = device_summary()
        state.ef_colour_items = [{"title": name, "value": node.GetID()} for name in COLOUR_TABLE_NAMES
                                 if (node := self.slicer.scene.GetFirstNodeByName(name)) is not None]
        state.ef_download_format = next(iter(DOWNLOAD_FORMATS))
        state.ef_download_formats = list(DOWNLOAD_FORMATS)
        state.ef_message = ""  # an error for the user (bad upload, inputs that cannot be fused)
        state.ef_uploading = False
        state.ef_max_upload_mb = self.max_upload_bytes / 1e6
        state.ef_layout = next(iter(LAYOUTS))
        state.ef_layouts = list(LAYOUTS)
        state.ef_link_views = True
        state.ef_window = state.ef_level = 0.0
        state.ef_window_range = [0.0, 1.0]
        self._show_settings()
        self._show_view()

    def _bind_state(self) -> None:
        for name in BOUND_SETTINGS:
            self.state.change(name)(self._on_input_changed)
        self.state.change("ef_opacity")(lambda ef_opacity, **_: self.controller.set_opacity(float(ef_opacity)))
        self.state.change("ef_fused_on_top")(self._on_fused_on_top_changed)
        self.state.change("ef_align")(self._on_align_changed)
        self.state.change("ef_window", "ef_level")(self._on_window_level_changed)
        self.state.change("ef_layout")(lambda ef_layout, **_: self.layout_manager.set_layout(ef_layout))

    def _on_input_changed(self, **_) -> None:
        settings, scene = self.controller.settings, self.slicer.scene
        for name, (field, is_node) in BOUND_SETTINGS.items():
            value = self.state[name]
            if is_node:
                value = scene.GetNodeByID(value) if value else None
            elif field == "batchSize":
                value = int(value or 0)
            setattr(settings, field, value)
        self.controller.settings_changed()
        self._show_settings()
        self._show_view()

    def _show_settings(self) -> None:
        """The controller's settings into the page (it may have filled in a modality or colour table)."""
        settings, state = self.controller.settings, self.state
        state.ef_volume_items = [{"title": node.GetName(), "value": node.GetID()} for node in self.controller.image_volumes()]
        for name, (field, is_node) in BOUND_SETTINGS.items():
            value = getattr(settings, field)
            state[name] = node_id(value) if is_node else value
        state.ef_opacity = settings.opacity
        state.ef_fused_on_top = settings.fusedOnTop

    def _show_view(self) -> None:
        view, state = self.controller.view(), self.state
        state.ef_problem = view.problem or ""
        state.ef_apply_text = view.apply_text
        state.ef_apply_enabled = view.apply_enabled
        state.ef_apply_tooltip = view.apply_tooltip
        state.ef_inputs_enabled = view.inputs_enabled
        state.ef_colour_enabled = view.colour_table_enabled
        state.ef_align = view.align_checked
        state.ef_align_tooltip = view.align_tooltip
        state.ef_status = view.status
        state.ef_progress_visible = view.progress is not None
        done, total = view.progress or (0, 0)
        state.ef_progress_total = total
        state.ef_progress = 100.0 * done / total if total else 0.0
        # Steps are slices, or with an alignment first, shares of the whole run: a percentage reads right for both.
        state.ef_progress_text = f"{100 * done // total} %" if total else "Starting..."
        state.ef_has_result = self.controller.settings.resultVolume is not None
        state.ef_download_name = self.download_name()

    # ---------------------------------------------------------------- loading

    def load_sample(self) -> None:
        """Load the chosen sample pair (the bundled phantoms), keep what is loaded already."""
        names = SAMPLE_PAIRS[self.state.ef_sample]
        for name in names:
            if self.slicer.scene.GetFirstNodeByName(name) is None:
                sampledata.load_sample_volume(name, self.slicer.volumes_logic)
        settings = self.controller.settings
        settings.mriVolume = self.slicer.scene.GetFirstNodeByName(names[0])
        settings.otherVolume = self.slicer.scene.GetFirstNodeByName(names[1])
        self._after_loading()

    async def upload(self, files: list[dict]) -> None:
        """Store, check and load uploaded files; a refused file gets a message and adds no node."""
        from trame.app.file_upload import ClientFile

        problems = []
        with self.state:
            self.state.ef_uploading = True
        for file in files or []:
            client_file = ClientFile(file)
            try:
                checked = uploads.store_upload(client_file.name or "", client_file.content or b"", self.uploads_folder(),
                                               self.max_upload_bytes)
                self._load_checked(checked)
            except InputError as error:
                problems.append(str(error))
        with self.state:
            self.state.ef_uploading = False
            self.state.ef_message = " ".join(problems)
            self._after_loading()

    def uploads_folder(self) -> Path:
        folder = self.work_folder / "uploads"
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder

    def _load_checked(self, checked: uploads.CheckedUpload):
        node = self.slicer.volumes_logic.AddArchetypeVolume(str(checked.path), checked.name)
        if node is None:
            raise InputError(f"Slicer could not read '{checked.name}'.")
        if checked.dicom_modality:
            self._set_dicom_modality(node, checked.dicom_modality)
        return node

    def _set_dicom_modality(self, node, code: str) -> None:
        """Record a DICOM series' Modality where Slicer's DICOM import puts it (the controller's guess reads it)."""
        import slicer

        hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(self.slicer.scene)
        item = hierarchy.GetItemByDataNode(node) or hierarchy.CreateItem(hierarchy.GetSceneItemID(), node)
        hierarchy.SetItemAttribute(item, slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMSeriesModalityAttributeName(), code)

    def _after_loading(self) -> None:
        self.controller.select_default_inputs()
        self.controller.settings_changed()
        mri = self.controller.settings.mriVolume
        if mri is not None and self.controller.shown_result() is None:
            for composite in self.logic.slice_composite_nodes():
                composite.SetBackgroundVolumeID(mri.GetID())
            self.logic.fit_slice_views()
            self._show_mri_alone()
        self._show_settings()
        self._show_view()
        self._show_window_level()

    # ---------------------------------------------------------------- running

    def _background_fusion(self, job) -> BackgroundFusion:
        return BackgroundFusion(job, work_folder=self.work_folder, log=logging.getLogger("EdgeFusion.worker").info)

    def apply(self) -> None:
        """The Apply / Cancel button."""
        self.state.ef_message = ""
        try:
            self.controller.apply()
        except InputError as error:
            self.state.ef_message = str(error)
        self._show_view()
        if self.controller.running and self._poll_task is None:
            self._poll_task = create_task(self._follow_run())

    async def _follow_run(self) -> None:
        try:
            while self.controller.running:
                await asyncio.sleep(POLL_INTERVAL_S)
                end = self.controller.poll()
                with self.state:
                    if end is not None and end.state == "failed":
                        self.state.ef_message = end.message
                    self._show_view()
                    if end is not None:
                        self._show_mri_alone()
                        self._show_settings()
                        self._show_window_level()
        finally:
            self._poll_task = None

    # ---------------------------------------------------------------- display

    def _on_align_changed(self, ef_align, **_) -> None:
        # Only a change by the user: the page echoes the value that _show_view has just set.
        if bool(ef_align) != self.controller.view().align_checked:
            self.controller.set_align(bool(ef_align))
            self._show_view()

    def _on_fused_on_top_changed(self, ef_fused_on_top, **_) -> None:
        self.controller.set_fused_on_top(bool(ef_fused_on_top))
        self._show_mri_alone()

    def _show_mri_alone(self) -> None:
        """The comparison layout's left view shows the MRI of the result, without the fused layer."""
        mri = self.controller.settings.resultMriVolume or self.controller.settings.mriVolume
        for view in self.slicer.view_manager.get_slice_views():
            if view.name == MRI_ALONE_VIEW:
                view.set_background_volume_id(node_id(mri))
                view.set_foreground_volume_id(None)

    def _on_view_modified(self, moved) -> None:
        """Linked slice scrolling: views of the same orientation follow the one that moved."""
        if self._linking or not self.state.ef_link_views:
            return
        self._linking = True
        try:
            position = moved.get_slice_value()
            for view in self.slicer.view_manager.get_slice_views():
                if view is not moved and view.get_orientation() == moved.get_orientation() and view.get_slice_value() != position:
                    view.set_slice_value(position)
        finally:
            self._linking = False

    def _show_window_level(self) -> None:
        mri = self.controller.settings.resultMriVolume or self.controller.settings.mriVolume
        display = mri.GetDisplayNode() if mri is not None else None
        if display is None:
            return
        low, high = mri.GetImageData().GetScalarRange()
        self.state.ef_window_range = [float(low), float(high)]
        self.state.ef_window, self.state.ef_level = float(display.GetWindow()), float(display.GetLevel())

    def _on_window_level_changed(self, ef_window, ef_level, **_) -> None:
        mri = self.controller.settings.resultMriVolume or self.controller.settings.mriVolume
        display = mri.GetDisplayNode() if mri is not None else None
        if display is not None and float(ef_window) > 0:
            display.AutoWindowLevelOff()
            display.SetWindowLevel(float(ef_window), float(ef_level))

    # ---------------------------------------------------------------- downloads

    def download_result(self):
        """The fused volume as a file (NRRD or NIfTI), sent to the browser."""
        import SimpleITK as sitk

        node = self.controller.settings.resultVolume
        if node is None:
            return None
        suffix = DOWNLOAD_FORMATS[self.state.ef_download_format]
        with tempfile.TemporaryDirectory(dir=self.work_folder) as folder:
            path = Path(folder) / f"fused{suffix}"
            sitk.WriteImage(volumes.sitk_image_from_volume(node), str(path), useCompression=True)
            return self.server.protocol.addAttachment(path.read_bytes())

    def download_name(self) -> str:
        node = self.controller.settings.resultVolume
        return uploads.safe_name(node.GetName() if node is not None else "fused")

    # ---------------------------------------------------------------- page

    def _build_ui(self) -> None:
        with SinglePageWithDrawerLayout(self.server, full_height=True) as self.ui:
            client.Style("html { overflow-y: hidden; } .v-footer { display: none !important; } .v-main { background: #202020; } "
                         ".ef-panel .v-input { margin-bottom: 2px; }")
            self.ui.title.set_text("EdgeFusion: MRI + CT / SPECT / PET fusion")
            self.ui.drawer.width = 380
            with self.ui.drawer:
                with html.Div(classes="pa-3 ef-panel"):
                    self._build_loading()
                    self._build_inputs()
                    self._build_apply()
                    self._build_display()
                    self._build_download()
            with self.ui.content:
                # Square views side by side: a taller view would cost render time and show only background.
                with html.Div(style="position: relative; width: 100%; height: min(calc(100vh - 64px), calc((100vw - 380px) / 3));",
                              raw_attrs=['data-testid="views"']):
                    self.layout_manager.initialize_layout_grid(self.ui)

    def _build_loading(self) -> None:
        html.Div("Load volumes", classes="text-subtitle-2 mb-1")
        with html.Div(classes="d-flex align-center"):
            v3.VSelect(v_model=("ef_sample",), items=("ef_sample_items", list(SAMPLE_PAIRS)), density="compact",
                       hide_details=True, label="Sample data", raw_attrs=['data-testid="sample-select"'])
            v3.VBtn("Load", click=self.load_sample, classes="ml-2", raw_attrs=['data-testid="load-sample"'],
                    disabled=("!ef_inputs_enabled",))
        v3.VFileInput(
            label="Upload NRRD, NIfTI, MHA or a zipped DICOM series",
            multiple=True, density="compact", hide_details=True, classes="mt-2",
            accept=",".join(uploads.ACCEPTED_SUFFIXES), raw_attrs=['data-testid="upload"'],
            disabled=("ef_uploading || !ef_inputs_enabled",),
            # The size is checked here so that a huge file is not sent at all; the server checks it again.
            change=("ef_message = ''; const files = [...$event.target.files]; "
                    "const big = files.filter(f => f.size > ef_max_upload_mb * 1e6); "
                    "if (big.length) { ef_message = big.map(f => `'${f.name}' is larger than ${ef_max_upload_mb} MB, this server's limit.`).join(' '); } "
                    f"else {{ trigger('{self.server.controller.trigger_name(self.upload)}', [files]); }}"),
        )
        v3.VProgressLinear(v_if=("ef_uploading",), indeterminate=True, classes="mt-1")
        v3.VAlert(v_if=("ef_message",), text=("ef_message",), type="error", density="compact", classes="mt-2",
                  closable=True, click_close="ef_message = ''", raw_attrs=['data-testid="message"'])

    def _build_inputs(self) -> None:
        html.Div("Inputs", classes="text-subtitle-2 mt-3 mb-1")
        disabled = ("!ef_inputs_enabled",)
        v3.VSelect(label="MRI volume", v_model=("ef_mri_id", None), items=("ef_volume_items",), clearable=True,
                   density="compact", disabled=disabled, raw_attrs=['data-testid="mri-select"'])
        v3.VSelect(label="CT, SPECT or PET", v_model=("ef_other_id", None), items=("ef_volume_items",), clearable=True,
                   density="compact", disabled=disabled, raw_attrs=['data-testid="other-select"'])
        v3.VSelect(label="Modality", v_model=("ef_modality",), items=("ef_modality_items",), density="compact",
                   disabled=disabled, raw_attrs=['data-testid="modality-select"'])
        v3.VCheckbox(label="Align to the MRI first", v_model=("ef_align", False), density="compact",
                     hint=("ef_align_tooltip",), persistent_hint=True, disabled=disabled,
                     raw_attrs=['data-testid="align-checkbox"'])
        with v3.VExpansionPanels(classes="mb-2", variant="accordion"):
            with v3.VExpansionPanel(title="Advanced"):
                with v3.VExpansionPanelText():
                    v3.VSelect(label="Fusion rule", v_model=("ef_rule",), items=("ef_rule_items",), density="compact",
                               disabled=disabled, raw_attrs=['data-testid="rule-select"'])
                    v3.VSelect(label="Slice plane", v_model=("ef_plane",), items=("ef_plane_items",), density="compact",
                               disabled=disabled)
                    v3.VSelect(label="Device", v_model=("ef_device",), items=("ef_device_items",), density="compact",
                               disabled=disabled, hint=("ef_device_info",), persistent_hint=True)
                    v3.VTextField(label="Batch size (0: automatic)", v_model_number=("ef_batch_size",), type="number",
                                  min=0, max=256, density="compact", disabled=disabled, classes="mt-2")
                    v3.VSelect(label="Colour table (greyscale SPECT/PET)", v_model=("ef_colour_id", None),
                               items=("ef_colour_items",), density="compact",
                               disabled=("!ef_inputs_enabled || !ef_colour_enabled",), raw_attrs=['data-testid="colour-select"'])

    def _build_apply(self) -> None:
        with v3.VTooltip(text=("ef_apply_tooltip",), location="top"):
            with v3.Template(v_slot_activator="{ props }"):
                with html.Div(v_bind="props"):
                    v3.VBtn("{{ ef_apply_text }}", click=self.apply, disabled=("!ef_apply_enabled",), color="primary",
                            block=True, raw_attrs=['data-testid="apply"'])
        html.Div("{{ ef_problem }}", v_if=("ef_problem",), classes="text-caption text-medium-emphasis mt-1",
                 raw_attrs=['data-testid="problem"'])
        with html.Div(v_if=("ef_progress_visible",), classes="mt-2"):
            v3.VProgressLinear(model_value=("ef_progress",), indeterminate=("ef_progress_total === 0",), height=18,
                               color="primary", raw_attrs=['data-testid="progress"'])
            html.Div("{{ ef_progress_text }}", classes="text-caption", raw_attrs=['data-testid="progress-text"'])
        html.Div("{{ ef_status }}", classes="text-body-2 mt-2", raw_attrs=['data-testid="status"'])

    def _build_display(self) -> None:
        html.Div("Display", classes="text-subtitle-2 mt-3")
        v3.VSelect(label="Views", v_model=("ef_layout",), items=("ef_layouts",), density="compact", hide_details=True,
                   classes="mb-1", raw_attrs=['data-testid="layout-select"'])
        v3.VSwitch(label="Link slice scrolling", v_model=("ef_link_views",), density="compact", hide_details=True,
                   color="primary", raw_attrs=['data-testid="link-views"'])
        v3.VSwitch(label="Fused volume on top of the MRI", v_model=("ef_fused_on_top",), density="compact",
                   hide_details=True, color="primary", raw_attrs=['data-testid="fused-on-top"'])
        v3.VSlider(label="Top layer opacity", v_model=("ef_opacity",), min=0, max=1, step=0.05, density="compact",
                   hide_details=True, thumb_label=True, raw_attrs=['data-testid="opacity"'])
        html.Div("MRI window / level", classes="text-caption mt-1")
        v3.VSlider(label="Window", v_model=("ef_window",), min=0, max=("ef_window_range[1] - ef_window_range[0]",),
                   density="compact", hide_details=True, raw_attrs=['data-testid="window"'])
        v3.VSlider(label="Level", v_model=("ef_level",), min=("ef_window_range[0]",), max=("ef_window_range[1]",),
                   density="compact", hide_details=True, raw_attrs=['data-testid="level"'])

    def _build_download(self) -> None:
        html.Div("Download", classes="text-subtitle-2 mt-3 mb-1")
        with html.Div(classes="d-flex align-center"):
            v3.VSelect(v_model=("ef_download_format",), items=("ef_download_formats",), density="compact",
                       hide_details=True, style="max-width: 110px;", raw_attrs=['data-testid="download-format"'])
            v3.VBtn("Fused volume", prepend_icon="mdi-download", classes="ml-2", disabled=("!ef_has_result",),
                    raw_attrs=['data-testid="download"'],
                    click=(f"utils.download(ef_download_name + ({DOWNLOAD_FORMATS})[ef_download_format], "
                           f"trigger('{self.server.controller.trigger_name(self.download_result)}'), 'application/octet-stream')"))
