"""Showing the result: slice composite nodes of Red/Yellow/Green, opacity, fitting, and the blended image.

The blended image is the output of Slicer's slice pipeline (``vtkMRMLSliceLogic``:
reslice, window/level or colour mapping, layer blending), the image a slice view
draws. The tests compare its pixels with the fused voxels they should show.
"""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="Slicer's MRML libraries (pip install slicer-core) are not installed")

from edgefusion_slicer_support import SLICE_VIEWS, app, blended_slice_image, logic  # noqa: E402,F401  (app, logic: fixtures)

from EdgeFusionMRML import sampledata, volumes  # noqa: E402


@pytest.fixture
def spect_result(app, logic):
    """MRI phantom and its pixel-average fusion with the SPECT phantom in PET-Heat colours (RGB)."""
    mri = sampledata.load_sample_volume("EdgeFusionPhantom-MRI", app.volumes_logic)
    spect = sampledata.load_sample_volume("EdgeFusionPhantom-SPECT", app.volumes_logic)
    fused = logic.fuse(mri, spect, "spect", method="pixel-average", colour_node=app.colour_node("PET-Heat"))
    for node in (mri, fused):
        node.GetDisplayNode().SetInterpolate(False)  # nearest voxel: pixels can be compared exactly
    return mri, fused


def composite_node(app, view_name):
    return app.slice_logics[view_name].GetSliceCompositeNode()


def test_every_slice_view_shows_the_mri_under_the_fused_volume(app, logic, spect_result):
    mri, fused = spect_result
    logic.show_result(mri, fused, fused_on_top=True, opacity=0.35)
    for view_name in SLICE_VIEWS:
        composite = composite_node(app, view_name)
        assert composite.GetBackgroundVolumeID() == mri.GetID()
        assert composite.GetForegroundVolumeID() == fused.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.35)


def test_the_layers_can_be_swapped_and_the_opacity_changed_live(app, logic, spect_result):
    mri, fused = spect_result
    logic.show_result(mri, fused, fused_on_top=False, opacity=0.5)
    logic.set_foreground_opacity(0.8)
    for view_name in SLICE_VIEWS:
        composite = composite_node(app, view_name)
        assert (composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID()) == (fused.GetID(), mri.GetID())
        assert composite.GetForegroundOpacity() == pytest.approx(0.8)


def test_views_are_fitted_to_the_volume(app, logic, spect_result):
    mri, fused = spect_result
    for slice_logic in app.slice_logics.values():  # start zoomed far in
        slice_logic.GetSliceNode().SetFieldOfView(5.0, 5.0, 1.0)
    logic.show_result(mri, fused)
    extent = np.ptp(volumes.world_bounds(mri).reshape(3, 2), axis=1)  # R, A, S size in mm
    for view_name, slice_logic in app.slice_logics.items():
        field_of_view = np.array(slice_logic.GetSliceNode().GetFieldOfView()[:2])
        in_plane = {"Red": extent[[0, 1]], "Yellow": extent[[1, 2]], "Green": extent[[0, 2]]}[view_name]
        assert field_of_view.max() >= in_plane.max() * 0.99, view_name
        assert field_of_view.max() <= in_plane.max() * 1.5, view_name


def expected_layer_pixels(slice_logic, volume_node, display_rgb) -> tuple[np.ndarray, np.ndarray]:
    """(RGB each view pixel should show from ``volume_node``, mask of pixels safely inside a voxel).

    Pixel (column, row) of the view is at slice node XYToRAS @ (column, row, 0, 1); the
    nearest voxel's display colour, ``display_rgb[k, j, i]``, is what it should show.
    """
    slice_node = slice_logic.GetSliceNode()
    columns, rows, _ = slice_node.GetDimensions()
    xy_to_ras = volumes.matrix_to_array(slice_node.GetXYToRAS())
    ras_to_ijk = np.linalg.inv(volumes.ijk_to_ras(volume_node))
    column, row = np.meshgrid(np.arange(columns), np.arange(rows))
    xy = np.stack([column.ravel(), row.ravel(), np.zeros(column.size), np.ones(column.size)])
    ijk = (ras_to_ijk @ xy_to_ras @ xy)[:3].T
    nearest = np.rint(ijk).astype(int)
    size = np.array(volume_node.GetImageData().GetDimensions())
    inside = np.all((nearest >= 0) & (nearest < size), axis=1)
    # Leave out pixels on a voxel border, where rounding may pick either neighbour.
    safe = inside & np.all(np.abs(ijk - np.rint(ijk)) < 0.45, axis=1)
    nearest = np.clip(nearest, 0, size - 1)
    pixels = display_rgb[nearest[:, 2], nearest[:, 1], nearest[:, 0]].astype(float)
    return pixels.reshape(rows, columns, 3), safe.reshape(rows, columns)


def mri_display_rgb(mri) -> np.ndarray:
    """The MRI's voxels as the slice viewer colours them (grey, through its window/level)."""
    low, high = volumes.display_window(mri)
    grey = np.clip((slicer.util.arrayFromVolume(mri).astype(float) - low) / (high - low), 0, 1) * 255
    return np.repeat(grey[..., None], 3, axis=-1)


@pytest.mark.parametrize("view_name", list(SLICE_VIEWS))
def test_blended_slice_image_contains_the_fused_pixels(app, logic, spect_result, view_name):
    mri, fused = spect_result
    slice_logic = app.slice_logics[view_name]
    logic.show_result(mri, fused, fused_on_top=True, opacity=1.0)  # also fits the view
    fused_pixels, safe = expected_layer_pixels(slice_logic, fused, slicer.util.arrayFromVolume(fused))
    mri_pixels, _ = expected_layer_pixels(slice_logic, mri, mri_display_rgb(mri))
    assert safe.sum() > 1000, "the view must show a good part of the volume"
    coloured = safe & (np.ptp(fused_pixels, axis=-1) > 40)  # voxels where the fused image is clearly in colour
    assert coloured.sum() > 200

    shown = {}
    for opacity in (1.0, 0.0, 0.5):
        logic.set_foreground_opacity(opacity)
        shown[opacity] = blended_slice_image(slice_logic)[..., :3].astype(float)

    # Opacity 1: the view shows the fused voxels (colour included), up to rounding in the display pipeline.
    difference = np.abs(shown[1.0][safe] - fused_pixels[safe])
    assert difference.max() <= 2 and difference.mean() < 0.5
    # Opacity 0: only the MRI.
    assert np.abs(shown[0.0][safe] - mri_pixels[safe]).max() <= 2
    # Half way: the average of the two layers, so the view really blends the fused volume in.
    assert np.abs(shown[0.5][safe] - (fused_pixels[safe] + mri_pixels[safe]) / 2).max() <= 2
    assert np.abs(shown[0.5][coloured] - mri_pixels[coloured]).mean() > 10
