"""The ``edgefusion`` command line: fuse, register, batch, info, demo, evaluate, train.

Bad input exits with status 2 and one line ``edgefusion: error: ...`` before any
work; Ctrl-C cancels cleanly (status 130) and nothing is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import __version__
from .devices import DEFAULT_BATCH_SIZE, DEVICE_CHOICES
from .errors import FusionCancelled, InputError
from .registration import REGISTRATION_CHOICES

EXIT_SOME_FAILED = 1  # batch --cohort: some rows were invalid or failed; the others were fused
EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return args.func(args)
    except InputError as error:
        print(f"edgefusion: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FusionCancelled, KeyboardInterrupt):
        print("edgefusion: cancelled; nothing was written", file=sys.stderr)
        return EXIT_CANCELLED


def build_parser() -> argparse.ArgumentParser:
    from .modality import MODALITIES, TASKS

    parser = argparse.ArgumentParser(prog="edgefusion", description="EH-DRAN fusion of MRI with CT, SPECT or PET.")
    parser.add_argument("--version", action="version", version=f"edgefusion {__version__}")
    commands = parser.add_subparsers(title="commands")

    fuse = commands.add_parser("fuse", help="fuse one MRI with one CT/SPECT/PET image or volume")
    fuse.add_argument("mri", type=Path, help="MRI: PNG/JPEG/TIFF/BMP, NIfTI, NRRD, MHA/MHD, or a DICOM series folder")
    fuse.add_argument("other", type=Path, help="CT, SPECT or PET of the same patient, same formats")
    fuse.add_argument("-o", "--output", type=Path, required=True, help="output file (.nii.gz, .nrrd, .mha, .png, .tif)")
    fuse.add_argument("--modality", help=f"modality of OTHER: {', '.join(MODALITIES)} (default: from its DICOM "
                                         "Modality tag, else from a word of its file name such as ct or fdg)")
    _add_engine_options(fuse)
    _add_registration_option(fuse, "align OTHER to the MRI first")
    fuse.add_argument("--axis", default="auto",
                      help="slicing axis of volumes: 0, 1, 2 (numpy z, y, x) or auto = acquisition plane (default)")
    fuse.add_argument("--ct-window", type=float, nargs=2, metavar=("LOW", "HIGH"),
                      help="window of the CT in its own units, e.g. -100 200 for HU; default: -100 200 for a CT "
                           "in Hounsfield units (minimum below -500), value/255 for an 8-bit CT, else scaled like an MRI")
    fuse.add_argument("--colormap", help="show a scalar SPECT/PET through this matplotlib colour map "
                                         "(e.g. hot, inferno) and fuse in colour; default: fuse as grey")
    fuse.set_defaults(func=run_fuse)

    register = commands.add_parser("register", help="register a CT/SPECT/PET onto an MRI and write the transform",
                                   description="Register OTHER onto MRI (Mattes mutual information, docs/registration.md) "
                                               "and write the ITK transform (Slicer: load it and put OTHER under it).")
    register.add_argument("mri", type=Path, help="MRI volume (NIfTI, NRRD, MHA/MHD, or a DICOM series folder)")
    register.add_argument("other", type=Path, help="CT, SPECT or PET volume of the same patient")
    register.add_argument("-o", "--output", type=Path, required=True, help="transform file to write (.tfm)")
    register.add_argument("--kind", default="rigid", choices=("rigid", "affine"), help="default: rigid")
    register.set_defaults(func=run_register)

    batch = commands.add_parser(
        "batch", help="fuse every pair of same-named 2D images in two folders, or every row of a cohort file",
        description="Two forms: --task T --mri-dir D --other-dir D (2D pictures, one process), or --cohort CSV "
                    "(volumes or pictures, one pair per row; in this process, on a local Dask cluster with --workers, "
                    "or on an existing one with --scheduler). docs/cohorts.md describes the cohort file.")
    batch.add_argument("--task", choices=list(TASKS), help="two-folder form: the task of every pair")
    batch.add_argument("--mri-dir", type=Path, help="two-folder form: the MRI pictures")
    batch.add_argument("--other-dir", type=Path, help="two-folder form: the CT/SPECT/PET pictures, named as the MRIs")
    batch.add_argument("--cohort", type=Path, help="cohort form: a CSV with the columns mri, other, modality and "
                                                   "optionally output, method, register")
    batch.add_argument("--out-dir", type=Path, required=True,
                       help="two-folder form: receives NAME.png for every pair; cohort form: default outputs, their "
                            "sidecars and summary.csv (created with its parents if needed)")
    batch.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                       help="cohort form: run on this Dask scheduler (workers must see the files under the same paths)")
    batch.add_argument("--workers", type=int, help="cohort form: run on a local Dask cluster of N worker processes")
    batch.add_argument("--threads", type=int, help="cohort form with a cluster: torch threads per worker (default: "
                                                  "cores / workers locally; on --scheduler the workers' own, 1 per "
                                                  "Dask thread unless their OMP_NUM_THREADS says otherwise)")
    _add_registration_option(batch, "cohort form, rows with an empty register column: align each other image to its "
                                    "MRI first")
    _add_engine_options(batch)
    batch.set_defaults(func=run_batch)

    info = commands.add_parser("info", help="version, model, bundled weights, devices")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=run_info)

    demo = commands.add_parser("demo", help="fuse the bundled sample data and write a comparison figure")
    demo.add_argument("--out-dir", type=Path, default=Path("demo-output"))
    _add_device_option(demo)
    demo.set_defaults(func=run_demo)

    # The web app is another front end: its options are its own, imported here without trame or Slicer.
    from EdgeFusionApp.launcher import add_arguments as add_app_arguments

    app = commands.add_parser("app", help="start the web app (browser front end; needs the [app] extra)",
                              description="Start the EdgeFusion web app and print the address to open.")
    add_app_arguments(app)
    app.set_defaults(func=run_app)

    # evaluate and train are defined beside their code
    from .evaluation import evaluate
    from .training import trainer

    evaluate.register_cli(commands)
    trainer.register_cli(commands)
    return parser


def _add_engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", "--rule", dest="method",
                        help="fusion method: a latent rule (e.g. sfnn, sfnn-compensated, local-activity, max) or a "
                             "pixel baseline (pixel-average, pixel-max, laplacian-pyramid, dwt, guided-filter); "
                             "default: the task's default. `edgefusion info` lists all names and the defaults.")
    _add_device_option(parser)
    parser.add_argument("--batch-size", type=int, help="slices per batch (default: " + ", ".join(
        f"{size} on {device.upper()}" for device, size in DEFAULT_BATCH_SIZE.items()) + ")")


def _add_registration_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--register", choices=REGISTRATION_CHOICES, default="auto",
                        help=f"{what}: auto (default: rigid, unless both images share a DICOM frame of reference or "
                             "are 2D pictures), none (place them by their headers), rigid or affine. The transform is "
                             "written beside the output (fused.nii.gz -> fused.tfm, ITK format, readable by Slicer)")


def _add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto",
                        help=f"{', '.join(DEVICE_CHOICES)} or cuda:N (default: auto = CUDA, else MPS, else CPU)")


# ------------------------------------------------------------------------- fuse

def run_fuse(args) -> int:
    from .fusion.options import FusionOptions
    from .fusion.pipeline import fuse_images
    from .io.images import (
        check_not_an_input,
        check_output_format,
        check_writable,
        read_image,
        write_image,
    )
    from .modality import check_modality
    from .registration import transform_path_for, write_transform

    options = FusionOptions(method=args.method, axis=_parse_axis(args.axis), device=args.device,
                            batch_size=args.batch_size, colour_table=_colormap(args.colormap) if args.colormap else None,
                            ct_window=args.ct_window, registration=args.register)
    check_writable(args.output)
    transform_path = transform_path_for(args.output)
    for output in (args.output, transform_path):
        check_not_an_input(output, {"MRI": args.mri, "other image": args.other})
    options.check()  # what does not depend on the modality, before any file is read
    mri = read_image(args.mri, "MRI")
    check_output_format(args.output, mri)  # a volume cannot become a PNG: say so before the work
    other = read_image(args.other, "other image")
    modality = check_modality(args.modality) if args.modality else guess_modality(other, args.other)
    options.check(modality.name)
    started = time.perf_counter()
    registrations = []
    with _progress_bar("registering and fusing" if options.registration != "none" else "fusing") as progress:
        fused = fuse_images(mri, other, modality.name, **options.arguments(), registered=registrations.append,
                            progress=progress)
    write_image(fused, args.output)
    registration = registrations[0] if registrations else None
    if registration is not None:
        write_transform(registration, transform_path)
        print(registration.summary(), file=sys.stderr)
    print(f"wrote {args.output}" + (f" and {transform_path}" if registration is not None else "") +
          f" ({modality.task}, {time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return 0


# --------------------------------------------------------------------- register

def run_register(args) -> int:
    """Register OTHER onto MRI, write the transform (atomically) and print the summary line."""
    from .io.images import check_not_an_input, read_image
    from .registration import check_transform_path, register, write_transform

    output = check_transform_path(args.output)
    check_not_an_input(output, {"MRI": args.mri, "other image": args.other})
    mri = read_image(args.mri, "MRI")
    other = read_image(args.other, "other image")
    with _progress_bar("registering", unit="step") as progress:
        result = register(mri, other, args.kind, progress=lambda fraction: progress(round(100 * fraction), 100))
    write_transform(result, output)
    print(result.summary())
    print(f"wrote {output}", file=sys.stderr)
    return 0


def guess_modality(image, path: Path):
    """The modality of ``image`` read from ``path``: its DICOM Modality tag, else its file name (one modality only)."""
    from .modality import guess_modality as guess

    code = image.GetMetaData("0008|0060") if image.HasMetaDataKey("0008|0060") else None
    found = guess(code, path.name)
    if found.modality is None:
        raise InputError(f"cannot tell whether {path} is CT, SPECT or PET: {found.reason}; pass --modality ct|spect|pet")
    return found.modality


def _parse_axis(text: str) -> int | None:
    if text == "auto":
        return None
    if text in ("0", "1", "2"):
        return int(text)
    raise InputError(f"--axis must be 0, 1, 2 or auto, got {text!r}")


def _colormap(name: str):
    import matplotlib
    import numpy as np

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise InputError(f"unknown colour map {name!r} (see matplotlib's colour maps, e.g. hot, inferno, jet)") from None
    return cmap(np.linspace(0.0, 1.0, 256))[:, :3].astype(np.float32)


class _progress_bar:
    """A tqdm bar on a terminal (slices, steps or pairs done / total); silent otherwise."""

    def __init__(self, label: str, unit: str = "slice"):
        self.label = label
        self.unit = unit
        self.bar = None

    def __enter__(self):
        return self.update

    def update(self, done: int, total: int) -> None:
        if not sys.stderr.isatty():
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=self.label, unit=self.unit, file=sys.stderr)
        self.bar.update(done - self.bar.n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False


# ------------------------------------------------------------------------ batch

def run_batch(args) -> int:
    """The cohort form (--cohort) or the two-folder form (--task, --mri-dir, --other-dir)."""
    folder_options = [name for name in ("task", "mri_dir", "other_dir") if getattr(args, name) is not None]
    if args.cohort is not None:
        if folder_options:
            raise InputError("--cohort replaces --task, --mri-dir and --other-dir; give one form or the other")
        return _run_cohort(args)
    if len(folder_options) < 3 or args.scheduler is not None or args.workers is not None or args.threads is not None:
        raise InputError("batch needs --cohort CSV, or --task, --mri-dir and --other-dir (which run in this process, "
                         "without --scheduler, --workers or --threads)")
    return _run_pair_folders(args)


def _run_cohort(args) -> int:
    """Fuse every row of a cohort file; exit status 0 only when every row was fused or already up to date."""
    from .cohort import read_cohort, run_cohort
    from .devices import check_device_name
    from .fusion.options import FusionOptions

    defaults = FusionOptions(method=args.method, device=args.device, batch_size=args.batch_size, registration=args.register)
    on_this_machine = args.scheduler is None
    # What does not depend on a row, once (the device by name only when workers elsewhere run the pairs).
    (defaults if on_this_machine else dataclasses.replace(defaults, device="cpu")).check()
    check_device_name(args.device)
    cohort = read_cohort(args.cohort, args.out_dir, defaults, check_device=on_this_machine)
    try:
        with _progress_bar("fusing pairs", unit="pair") as progress:
            report = run_cohort(cohort, scheduler=args.scheduler, workers=args.workers, torch_threads=args.threads,
                                progress=progress)
    except KeyboardInterrupt:
        print(f"edgefusion: cancelled; the pairs finished are kept (see {args.out_dir / 'summary.csv'}) and the same "
              "command does the rest", file=sys.stderr)
        return EXIT_CANCELLED
    print(report.text(), file=sys.stderr)
    return 0 if report.succeeded else EXIT_SOME_FAILED


def _run_pair_folders(args) -> int:
    """Fuse every same-named pair; outputs appear in OUT_DIR only when all succeeded."""
    import numpy as np
    import SimpleITK as sitk

    from .fusion.colour import delivered_8bit
    from .fusion.engine import FusionEngine
    from .fusion.pipeline import fuse_prepared, prepare_inputs
    from .io.atlas import find_pairs, unmatched_names
    from .io.images import (
        check_not_an_input,
        check_output_folder,
        read_image,
        squeeze_single_slice,
        write_image,
    )
    from .modality import check_task

    other_modality = check_task(args.task)
    modality = other_modality.name
    # The engine first: an unknown method or device, or missing weights, is refused before any pair is read.
    engine = FusionEngine(args.method, args.task, args.device, args.batch_size)  # weights loaded once
    pairs = find_pairs(args.mri_dir, args.other_dir)
    out_dir = args.out_dir
    check_not_an_input(out_dir, {"--mri-dir": args.mri_dir, "--other-dir": args.other_dir})
    check_output_folder(out_dir, "--out-dir")
    images = []
    for pair in pairs:  # read and check everything before any fusion work
        mri, other = prepare_inputs(read_image(pair.mri_path, "MRI"), read_image(pair.other_path, other_modality.label), modality)
        if squeeze_single_slice(mri).GetDimension() != 2:
            raise InputError(f"batch fuses 2D images; {pair.mri_path} is {mri.GetDimension()}D (use `edgefusion fuse`)")
        images.append((pair.name, mri, other))
    skipped = unmatched_names(args.mri_dir, args.other_dir)
    if skipped:
        print(f"edgefusion: {len(skipped)} image(s) without a partner skipped: {', '.join(skipped[:5])}", file=sys.stderr)

    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".edgefusion-partial-", dir=out_dir))
    try:
        with _progress_bar("fusing pairs") as progress:
            for done, (name, mri, other) in enumerate(images, start=1):
                fused = fuse_prepared(mri, other, modality, engine)
                if other_modality.shown_in_colour and fused.GetNumberOfComponentsPerPixel() == 1:
                    # The contract is RGB PNGs for SPECT/PET, even for a grey input.
                    grey = delivered_8bit(sitk.GetArrayViewFromImage(fused))
                    fused = sitk.GetImageFromArray(np.repeat(grey[..., np.newaxis], 3, axis=-1), isVector=True)
                write_image(fused, staging / f"{name}.png")
                progress(done, len(images))
        for produced in sorted(staging.iterdir()):
            os.replace(produced, out_dir / produced.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {len(images)} fused images to {out_dir}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------- info

def info_dict() -> dict:
    from .devices import available_devices
    from .fusion.methods import DEFAULT_METHOD, method_names
    from .model.network import EHDRAN, count_parameters
    from .model.weights import available_tasks, models_dir

    return {
        "version": __version__,
        "model": "EH-DRAN",
        "parameters": count_parameters(EHDRAN()),
        "models_dir": str(models_dir()),
        "tasks": {task: {"file": entry["file"], "sha256": entry["sha256"]} for task, entry in available_tasks().items()},
        "default_methods": DEFAULT_METHOD,
        "methods": method_names(),
        "devices": available_devices(),
    }


def run_info(args) -> int:
    info = info_dict()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"edgefusion {info['version']}: {info['model']}, {info['parameters']:,} parameters")
    print(f"weights ({info['models_dir']}):")
    for task, entry in info["tasks"].items() or [("none", {"file": "-", "sha256": "-"})]:
        print(f"  {task:10s} {entry['file']}  sha256 {entry['sha256']}")
    print("methods: " + ", ".join(info["methods"]))
    print("defaults: " + ", ".join(f"{task} {method}" for task, method in info["default_methods"].items()))
    print("devices: " + ", ".join(f"{d['device']} ({d['name']})" for d in info["devices"]))
    return 0


def run_app(args) -> int:
    """The web app runs until Ctrl+C (the trame and Slicer packages are imported by the session processes)."""
    from EdgeFusionApp.launcher import run

    return run(args)


def run_demo(args) -> int:
    from .demo import run_demo as demo

    return demo(args.out_dir, args.device)


if __name__ == "__main__":
    sys.exit(main())
