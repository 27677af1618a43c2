"""``edgefusion demo``: fuse the bundled samples and draw what was done.

Uses the bundled weights and the default method of each task. Writes, in the output folder:

* the synthetic phantom (aligned by construction, no registration): ``phantom-mri-ct-fused.nrrd``
  (scalar), ``phantom-mri-spect-fused.nrrd`` (RGB; the scalar SPECT is shown through the "hot"
  colour map, as a viewer would) and ``comparison.png`` (middle axial slice: inputs on the MRI
  grid and the fusions);
* the real MRI-DIR porcine head (CC BY 4.0, scanners' frames, not registered): the CT registered
  rigidly onto the T2 MRI, then fused: ``mridir-mr-ct.tfm``, ``mridir-mr-ct-fused.nrrd`` and
  ``registration.png`` (a coronal slice: the CT where its header puts it, the CT after
  registration with the MRI's edges over it, and the fusion).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from . import RESOURCES_DIR

SAMPLE_DIR = RESOURCES_DIR / "SampleData"
MRIDIR_DIR = SAMPLE_DIR / "MRIDIR"
SPECT_COLOUR_MAP = "hot"


def sample_path(name: str, folder: Path = SAMPLE_DIR) -> Path:
    """A sample file of ``folder``, after checking its sha256 against the folder's ``sampledata.json``."""
    from .errors import InputError
    from .model.weights import sha256_of

    registry = json.loads((folder / "sampledata.json").read_text(encoding="utf-8"))
    path = folder / name
    if not path.is_file() or sha256_of(path) != registry["files"][name]["sha256"]:
        raise InputError(f"sample file {path} is missing or does not match its sha256 in sampledata.json; "
                         "regenerate it (make_phantom.py, or scripts/make_mridir_sample.py for MRIDIR/)")
    return path


def run_demo(out_dir: Path, device: str = "auto") -> int:
    import matplotlib

    from .cli import _colormap
    from .errors import InputError
    from .fusion.pipeline import fuse_images, prepare_inputs
    from .io.images import check_writable, read_image, write_image
    from .registration import write_transform

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create the output folder {out_dir}: {error.strerror}") from None
    outputs = {"ct": out_dir / "phantom-mri-ct-fused.nrrd", "spect": out_dir / "phantom-mri-spect-fused.nrrd"}
    figure_path = out_dir / "comparison.png"
    real_fused, real_transform, real_figure = (out_dir / "mridir-mr-ct-fused.nrrd", out_dir / "mridir-mr-ct.tfm",
                                               out_dir / "registration.png")
    for path in (*outputs.values(), figure_path, real_fused, real_figure):
        check_writable(path)
    if real_transform.is_dir():
        raise InputError(f"output path is a folder: {real_transform}")
    mri = read_image(sample_path("EdgeFusionPhantom-MRI.nrrd"), "MRI")
    others = {"ct": read_image(sample_path("EdgeFusionPhantom-CT.nrrd"), "CT"),
              "spect": read_image(sample_path("EdgeFusionPhantom-SPECT.nrrd"), "SPECT")}
    tables = {"ct": None, "spect": _colormap(SPECT_COLOUR_MAP)}
    fused = {}
    for modality, other in others.items():
        started = time.perf_counter()
        fused[modality] = fuse_images(mri, other, modality, device=device, colour_table=tables[modality])
        print(f"fused phantom MRI + {modality.upper()} in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    for modality, image in fused.items():
        write_image(image, outputs[modality])

    real_mri = read_image(sample_path("MRIDIR-Porcine-MR-T2.nrrd", MRIDIR_DIR), "MRI")
    real_ct = read_image(sample_path("MRIDIR-Porcine-CT.nrrd", MRIDIR_DIR), "CT")
    registrations = []
    started = time.perf_counter()
    real = fuse_images(real_mri, real_ct, "ct", device=device, registration="rigid", registered=registrations.append)
    print(f"registered and fused the MRI-DIR T2 MRI + CT in {time.perf_counter() - started:.1f} s: "
          f"{registrations[0].summary()}", file=sys.stderr)
    write_image(real, real_fused)
    write_transform(registrations[0], real_transform)

    matplotlib.use("Agg")
    _draw(mri, {m: prepare_inputs(mri, o, m, tables[m])[1] for m, o in others.items()}, fused, tables, figure_path)
    _draw_registration(real_mri, real_ct, registrations[0], real, real_figure)
    for path in (*outputs.values(), figure_path, real_fused, real_transform, real_figure):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _draw(mri, resampled: dict, fused: dict, tables: dict, path: Path) -> None:
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    from .fusion.colour import apply_colour_table
    from .io.files import atomic_path
    from .fusion.intensity import window_for

    middle = mri.GetSize()[2] // 2
    mri_slice = sitk.GetArrayViewFromImage(mri)[middle]
    mri01 = window_for(sitk.GetArrayViewFromImage(mri), "mri").apply(mri_slice)
    figure, axes = plt.subplots(2, 3, figsize=(9, 6.4), constrained_layout=True)
    for row, modality in enumerate(("ct", "spect")):
        volume = sitk.GetArrayViewFromImage(resampled[modality])
        other01 = window_for(volume, modality).apply(volume[middle])
        if tables[modality] is not None:
            other01 = apply_colour_table(other01, tables[modality])
        result = sitk.GetArrayViewFromImage(fused[modality])[middle]
        panels = [(mri01, "MRI"), (other01, f"{modality.upper()} on the MRI grid"), (result, "EH-DRAN fusion")]
        for axis, (image, title) in zip(axes[row], panels):
            axis.imshow(image, cmap="gray", vmin=0, vmax=255 if image.dtype == np.uint8 else 1)
            axis.set_title(title)
            axis.axis("off")
    figure.suptitle("EdgeFusion demo: synthetic phantom (CC0), middle axial slice")
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=100)
    finally:
        plt.close(figure)


def _draw_registration(mri, ct, registration, fused, path: Path) -> None:
    """One coronal slice through the MRI's centre: MRI, CT placed by its header, CT after registration
    under the MRI's edges, and the fusion."""
    import matplotlib.pyplot as plt
    import SimpleITK as sitk

    from .fusion.intensity import CT_WINDOW_HU, IntensityWindow, window_for
    from .io.files import atomic_path

    def on_mri(transform):
        return sitk.GetArrayFromImage(sitk.Resample(ct, mri, transform, sitk.sitkLinear, -1024.0, sitk.sitkFloat32))

    row = mri.GetSize()[1] // 2  # coronal: numpy axis 1; superior up, and square pixels (2 x 2.5 mm)
    aspect = mri.GetSpacing()[2] / mri.GetSpacing()[0]
    mri_values = sitk.GetArrayViewFromImage(mri)
    mri01 = window_for(mri_values, "mri").apply(mri_values)[:, row][::-1]
    ct_window = IntensityWindow(*CT_WINDOW_HU)  # the window the fusion sees
    before = ct_window.apply(on_mri(sitk.Transform(3, sitk.sitkIdentity)))[:, row][::-1]
    after = ct_window.apply(on_mri(registration.transform))[:, row][::-1]
    edges = sitk.GetArrayFromImage(sitk.CannyEdgeDetection(sitk.GetImageFromArray(mri01.astype(np.float32)),
                                                           0.08, 0.2, [1.0, 1.0])) > 0
    overlay = np.repeat(after[..., np.newaxis], 3, axis=-1)
    overlay[edges] = (0.1, 0.9, 0.2)
    result = sitk.GetArrayViewFromImage(fused)[:, row][::-1]
    panels = [(mri01, "T2 MRI"), (before, "CT placed by its header"), (overlay, "CT registered, MRI edges in green"),
              (result, "EH-DRAN fusion")]
    figure, axes = plt.subplots(1, 4, figsize=(13, 4.2), constrained_layout=True)
    for axis, (image, title) in zip(axes, panels):
        axis.imshow(image, cmap="gray", vmin=0, vmax=1, aspect=aspect)
        axis.set_title(title)
        axis.axis("off")
    figure.suptitle("EdgeFusion demo: real scanner CT and T2 MRI of a porcine head (TCIA MRI-DIR, CC BY 4.0), "
                    f"coronal slice\n{registration.summary()}")
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=90)
    finally:
        plt.close(figure)
