"""Real volumes before/after: intensity windows and fusion rule, measured and drawn.

    python docs/real_volumes.py MRI OTHER MODALITY OUT.png [--slice Z] [--colormap hot] [--before-method M]

MRI and OTHER are volumes of one head. When they are not on one grid, OTHER is registered onto the
MRI (``EdgeFusionLib.registration.register``, rigid) and resampled onto its grid first.
Draws one slice: the MRI and the other as EdgeFusion windows them, the plain 50 % overlay a viewer
shows, the fusion with the earlier windows (MRI [min, 99.5th percentile], counts [min(0, min),
99.9th percentile]) and ``--before-method`` (default ``local-activity``), and the fusion with the
current defaults. Prints the salient metrics of both fusions over every slice with foreground.

The figure of the MRI-DIR phantom pair (CC BY 4.0) is docs/real-mridir.png; figures of data without
a licence (the CMTK T1/PET pair) must stay out of the repository.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

from EdgeFusionLib.cli import _colormap  # noqa: E402
from EdgeFusionLib.evaluation.metrics import (  # noqa: E402
    SALIENT_METRICS,
    compute_metrics,
    foreground,
)
from EdgeFusionLib.fusion.colour import apply_colour_table, luma, plain_overlay  # noqa: E402
from EdgeFusionLib.fusion.engine import FusionEngine  # noqa: E402
from EdgeFusionLib.fusion.intensity import IntensityWindow, strided_sample, window_for  # noqa: E402


def earlier_window(values: np.ndarray, modality: str) -> IntensityWindow:
    """The windows before the tissue-based MRI window (kept here to draw and measure 'before')."""
    if modality == "ct" and values.min() < -500:
        return window_for(values, "ct")
    sample = strided_sample(values)
    if values.dtype == np.uint8:
        return IntensityWindow(0.0, 255.0)
    low = float(values.min())
    if modality in ("spect", "pet"):
        return IntensityWindow(min(low, 0.0), float(np.percentile(sample, 99.9)))
    return IntensityWindow(low, float(np.percentile(sample, 99.5)))


def fuse(mri, other, modality, method, windows, table):
    """(delivered image as RGB float (Z, Y, X, 3) in [0, 1], MRI 0-1, other 0-1 (luma for colour))."""
    engine = FusionEngine(method, {"ct": "MRI-CT", "spect": "MRI-SPECT", "pet": "MRI-PET"}[modality], "cpu")
    mri_window, other_window = windows
    out = engine.fuse(mri, other, mri_window=mri_window, other_window=other_window, colour_table=table)
    mri01, other01 = mri_window.apply(mri), other_window.apply(other)
    if table is not None:
        other_shown = apply_colour_table(other01, table)
        return out / 255.0, mri01, other_shown
    return np.repeat(out[..., None], 3, -1), mri01, np.repeat(other01[..., None], 3, -1)


def salient_summary(delivered, mri01, other_shown) -> dict[str, float]:
    """Salient metrics (fused luma against the MRI and the other's luma) over slices with foreground."""
    rows = []
    for fused_slice, mri_slice, other_slice in zip(delivered, mri01, other_shown):
        other_luma = np.clip(luma(other_slice), 0, 1)
        if foreground(mri_slice, other_luma).sum() < 100:
            continue
        rows.append(compute_metrics(np.clip(luma(fused_slice), 0, 1), mri_slice, other_luma, names=list(SALIENT_METRICS)))
    return {name: float(np.nanmean([row[name] for row in rows])) for name in SALIENT_METRICS} | {"slices": len(rows)}


def main(argv=None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mri")
    parser.add_argument("other")
    parser.add_argument("modality", choices=["ct", "spect", "pet"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--slice", type=int)
    parser.add_argument("--colormap")
    parser.add_argument("--before-method", default="local-activity")
    args = parser.parse_args(argv)
    mri_image, other_image = sitk.ReadImage(args.mri), sitk.ReadImage(args.other)
    if mri_image.GetSize() != other_image.GetSize():
        from EdgeFusionLib.registration import register

        transform = register(mri_image, other_image).transform
        outside = float(sitk.GetArrayViewFromImage(other_image).min())
        other_image = sitk.Resample(other_image, mri_image, transform, sitk.sitkLinear, outside, other_image.GetPixelID())
    mri, other = sitk.GetArrayFromImage(mri_image), sitk.GetArrayFromImage(other_image)
    table = _colormap(args.colormap) if args.colormap else None
    before = fuse(mri, other, args.modality, args.before_method,
                  (earlier_window(mri, "mri"), earlier_window(other, args.modality)), table)
    after = fuse(mri, other, args.modality, None, (window_for(mri, "mri"), window_for(other, args.modality)), table)
    for label, result in (("before", before), ("after", after)):
        print(label, {k: round(v, 4) for k, v in salient_summary(*result).items()})
    z = args.slice if args.slice is not None else len(mri) // 2
    _, mri01, other_shown = after
    panels = [("MRI (window from its tissue)", np.repeat(mri01[z][..., None], 3, -1)),
              (f"{args.modality.upper()} on the MRI grid", other_shown[z]),
              ("plain 50 % overlay", plain_overlay(mri01[z], other_shown[z])),
              (f"before: {args.before_method}, earlier windows", before[0][z]),
              ("EdgeFusion default", after[0][z])]
    figure, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), constrained_layout=True)
    for axis, (title, image) in zip(axes, panels):
        axis.imshow(np.clip(image, 0, 1), interpolation="nearest")
        axis.set_title(title, fontsize="small")
        axis.axis("off")
    figure.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
