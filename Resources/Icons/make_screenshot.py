"""Render the README/Extensions-catalog screenshot: two fusions in Slicer's Red/Yellow/Green views.

Top row: the real scanner pair of the sample data (MRI-DIR porcine head, T2 MRI + CT, not
registered), aligned to the MRI by the module ("Align to the MRI first") and fused; bottom row: the
MRI + SPECT phantom fused through PET-Heat. The views come from Slicer's own slice pipeline
(``vtkMRMLSliceLogic`` of the ``slicer-core`` wheel: reslicing, colour mapping and layer blending, as
in the desktop application), fused volume over the MRI. The fusion uses the module's default method,
that is the bundled trained weights::

    python Resources/Icons/make_screenshot.py            # writes Screenshots/EdgeFusion-slice-views.png
    python Resources/Icons/make_screenshot.py --method pixel-average --output /tmp/check.png

EXTENSION_SCREENSHOTURLS in the top-level CMakeLists.txt points to the default output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUTPUT = REPO / "Screenshots" / "EdgeFusion-slice-views.png"
VIEW_PIXELS = 320
#: Slicer's colours for the view name bars.
VIEW_COLOURS = {"Red": (243, 74, 51), "Yellow": (237, 214, 49), "Green": (110, 176, 75)}


def render(method: str | None) -> np.ndarray:
    """RGB image: one row of the three slice views per fusion, each view with its coloured name bar."""
    sys.path[:0] = [str(REPO / "Testing"), str(REPO / "EdgeFusion"), str(REPO)]
    from edgefusion_slicer_support import blended_slice_image, make_slicer_scene

    from EdgeFusionMRML import sampledata
    from EdgeFusionMRML.logic import VolumeFusionLogic

    app = make_slicer_scene()
    for slice_logic in app.slice_logics.values():
        slice_logic.ResizeSliceNode(VIEW_PIXELS, VIEW_PIXELS)
    logic = VolumeFusionLogic(app.scene, app.application_logic)

    def load(name):
        return sampledata.load_sample_volume(name, app.volumes_logic)

    rows = []
    t2, ct = load("MRIDIR-Porcine-MR-T2"), load("MRIDIR-Porcine-CT")
    fused = logic.fuse(t2, ct, "ct", method=method, registration="auto")
    logic.show_result(t2, fused, fused_on_top=True, opacity=1.0)
    rows.append(_views(app, blended_slice_image))

    mri, spect = load("EdgeFusionPhantom-MRI"), load("EdgeFusionPhantom-SPECT")
    display = spect.GetDisplayNode()  # full count range: the automatic window saturates the colours
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, spect.GetImageData().GetScalarRange()[1])
    fused = logic.fuse(mri, spect, "spect", method=method, colour_node=app.colour_node("PET-Heat"))
    logic.show_result(mri, fused, fused_on_top=True, opacity=1.0)
    rows.append(_views(app, blended_slice_image))
    gap = np.full((4, rows[0].shape[1], 3), 40, np.uint8)
    return np.concatenate([rows[0], gap, rows[1]], axis=0)


def _views(app, blended_slice_image) -> np.ndarray:
    panels = []
    for name, slice_logic in app.slice_logics.items():
        view = blended_slice_image(slice_logic)[::-1, :, :3]  # VTK rows start at the bottom
        bar = np.empty((18, view.shape[1], 3), np.uint8)
        bar[:] = VIEW_COLOURS[name]
        panels.append(np.concatenate([bar, view], axis=0))
        panels.append(np.full((panels[-1].shape[0], 4, 3), 40, np.uint8))  # gap between views
    return np.concatenate(panels[:-1], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default=None, help="fusion method (default: the module's, which needs the trained weights)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    arguments = parser.parse_args()

    from PIL import Image

    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render(arguments.method)).save(arguments.output, optimize=True)
    print(f"wrote {arguments.output}")


if __name__ == "__main__":
    main()
