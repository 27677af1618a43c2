"""Registration accuracy and time on real scans (the shared MRI-DIR and CMTK MR-PET pairs).

    python benchmarks/bench_registration.py [--transforms 10] [--seed 7] [--data ../shared/data]
                                            [--kinds rigid,affine]

1. Known transforms: ``--transforms`` random rigid transforms A (rotation about a random axis
   up to 10°, translation up to 20 mm, fixed seed) move the real MRI-DIR CT: the moved CT is the
   CT resampled (linear) through A's inverse on its own grid, so A is the right answer.
   * CT -> moved CT: the registration should give A. TRE = |T(x) - A(x)| over the CT's head mask
     (every voxel of the 4 mm mask, mm): mean and max per transform.
   * MR -> moved CT: the registration should give A o T0, where T0 is the registration of the
     MR to the unmoved CT (found once). The TRE here measures consistency: how far the answer
     moves when only the CT's pose changes.
2. Time of the rigid (and affine) registration of the MRI-DIR pair (T2 MR 1x1x2.5 mm fixed, CT
   0.78x0.78x1.25 mm moving) and of the CMTK T1-PET pair, each run twice: the two transforms
   must be bit-identical.

Prints a markdown report (paste it into benchmarks/results.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from EdgeFusionLib.io.images import read_image
from EdgeFusionLib.registration import RegistrationError, register
from EdgeFusionLib.registration.align import (
    LEVELS_MM,
    MASK_LEVEL_MM,
    head_mask,
    scalar_volume,
    shrink_to,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def random_rigid(rng: np.random.Generator, centre: np.ndarray, max_degrees: float = 10.0, max_mm: float = 20.0):
    """A rigid transform: rotation by up to ``max_degrees`` about a random axis through ``centre``,
    translation of up to ``max_mm`` in a random direction (uniform in size)."""
    import SimpleITK as sitk

    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    transform = sitk.VersorRigid3DTransform()
    transform.SetCenter(centre.tolist())
    transform.SetRotation(axis.tolist(), float(np.radians(rng.uniform(-max_degrees, max_degrees))))
    transform.SetTranslation((direction * rng.uniform(0, max_mm)).tolist())
    return sitk.Euler3DTransform(transform.GetCenter(), *_euler_angles(transform), transform.GetTranslation())


def _euler_angles(transform):
    import SimpleITK as sitk

    euler = sitk.Euler3DTransform()
    euler.SetCenter(transform.GetCenter())
    euler.SetMatrix(transform.GetMatrix())
    return euler.GetAngleX(), euler.GetAngleY(), euler.GetAngleZ()


def mask_points(image) -> np.ndarray:
    """Physical points (N, 3) of the head mask of ``image`` (at the mask level, 4 mm)."""
    import SimpleITK as sitk

    mask = head_mask(shrink_to(scalar_volume(image, "image"), MASK_LEVEL_MM))
    indices = np.argwhere(sitk.GetArrayViewFromImage(mask) > 0)[:, ::-1]
    return np.array([mask.TransformIndexToPhysicalPoint([int(i) for i in index]) for index in indices])


def apply(transform, points: np.ndarray) -> np.ndarray:
    return np.array([transform.TransformPoint(point.tolist()) for point in points])


def moved(image, transform):
    """``image`` moved by ``transform`` (a voxel at p now sits at transform(p)), on its own grid."""
    import SimpleITK as sitk

    background = float(sitk.GetArrayViewFromImage(image).min())
    return sitk.Resample(image, image, transform.GetInverse(), sitk.sitkLinear, background)


def composed(outer, inner):
    """outer o inner as one transform."""
    import SimpleITK as sitk

    composite = sitk.CompositeTransform(3)
    composite.AddTransform(outer)
    composite.AddTransform(inner)
    return composite


def known_transforms(ct, mr, count: int, seed: int, kind: str) -> list[dict]:
    rng = np.random.default_rng(seed)
    ct_points, mr_points = mask_points(ct), mask_points(mr)
    centre = ct_points.mean(axis=0)
    baseline = register(mr, ct, kind)
    rows = []
    for index in range(count):
        truth = random_rigid(rng, centre)
        angle = np.degrees(np.arccos(np.clip((np.trace(np.reshape(truth.GetMatrix(), (3, 3))) - 1) / 2, -1, 1)))
        shift = np.linalg.norm(np.array(truth.TransformPoint(centre.tolist())) - centre)
        target = moved(ct, truth)
        row = {"index": index + 1, "angle": angle, "shift": shift}
        for key, fixed, points, expected in (("ct", ct, ct_points, truth),
                                             ("mr", mr, mr_points, composed(truth, baseline.transform))):
            try:
                found = register(fixed, target, kind)
            except RegistrationError as error:  # counted, and shown in the table
                row.update({f"{key}_mean": np.nan, f"{key}_max": np.nan, f"{key}_seconds": np.nan,
                            f"{key}_refused": str(error)})
                continue
            errors = np.linalg.norm(apply(found.transform, points) - apply(expected, points), axis=1)
            row.update({f"{key}_mean": errors.mean(), f"{key}_max": errors.max(), f"{key}_seconds": found.seconds})
        rows.append(row)
        print(f"  {index + 1}: {angle:.1f}° {shift:.1f} mm: CT {row['ct_mean']:.2f}/{row['ct_max']:.2f} mm, "
              f"MR {row['mr_mean']:.2f}/{row['mr_max']:.2f} mm", file=sys.stderr)
    return rows


def timed_pair(fixed, moving, kind: str):
    first = register(fixed, moving, kind)
    second = register(fixed, moving, kind)
    identical = (tuple(first.transform.GetParameters()) == tuple(second.transform.GetParameters())
                 and tuple(first.transform.GetFixedParameters()) == tuple(second.transform.GetFixedParameters()))
    return first, min(first.seconds, second.seconds), identical


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transforms", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--kinds", default="rigid,affine")
    args = parser.parse_args()
    mridir, cmtk = args.data / "mridir", args.data / "cmtk-mr-pet"
    mr = read_image(mridir / "MRIDIR-porcine-head-MR-T2.nrrd", "MRI")
    ct = read_image(mridir / "MRIDIR-porcine-head-CT.nrrd", "CT")
    kinds = args.kinds.split(",")

    print(f"## Registration (`python benchmarks/bench_registration.py --transforms {args.transforms} --seed "
          f"{args.seed}`)\n")
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (registration runs on one "
          f"thread), SimpleITK {_sitk_version()}; levels {'/'.join(f'{size:g}' for size in LEVELS_MM)} mm.\n")
    print("### Time (MRI-DIR: T2 MR 256x256x94 at 1x1x2.5 mm fixed, CT 256x256x204 at 0.78x0.78x1.25 mm moving; "
          "CMTK: T1 MR 171x220x22 at 0.9x0.9x6 mm fixed, PET 47x65x28 at 3.4x3.4x5.5 mm moving)\n")
    print("| pair | kind | seconds (best of 2) | two runs bit-identical | result |")
    print("|---|---|---|---|---|")
    pairs = [("MRI-DIR MR-CT", mr, ct)]
    if (cmtk / "pat001_mr_T1.nii.gz").exists():
        pairs.append(("CMTK MR-PET", read_image(cmtk / "pat001_mr_T1.nii.gz"), read_image(cmtk / "pat001_pet.nii.gz")))
    for name, fixed, moving in pairs:
        for kind in kinds:
            try:
                result, seconds, identical = timed_pair(fixed, moving, kind)
            except RegistrationError as error:
                print(f"| {name} | {kind} | - | - | refused: {error} |")
                continue
            print(f"| {name} | {kind} | {seconds:.1f} | {'yes' if identical else 'NO'} | {result.summary()} |")
    for kind in kinds:
        print(f"\n### Accuracy, {kind}: {args.transforms} known rigid transforms of the real CT (up to 10°, 20 mm)\n")
        print("TRE over the CT's (resp. MR's) head mask, every 4 mm voxel. CT -> moved CT: against the known "
              "answer. MR -> moved CT: against the known transform composed with the MR -> CT registration "
              "(consistency).\n")
        print("| # | rotation (°) | translation (mm) | CT->CT TRE mean | max | s | MR->CT TRE mean | max | s |")
        print("|---|---|---|---|---|---|---|---|---|")
        rows = known_transforms(ct, mr, args.transforms, args.seed, kind)
        for row in rows:
            print(f"| {row['index']} | {row['angle']:.1f} | {row['shift']:.1f} | {row['ct_mean']:.2f} | "
                  f"{row['ct_max']:.2f} | {row['ct_seconds']:.1f} | {row['mr_mean']:.2f} | {row['mr_max']:.2f} | "
                  f"{row['mr_seconds']:.1f} |")
        for key in ("ct", "mr"):
            means = np.array([row[f"{key}_mean"] for row in rows])
            maxima = np.array([row[f"{key}_max"] for row in rows])
            refused = [row[f"{key}_refused"] for row in rows if f"{key}_refused" in row]
            print(f"\n{key.upper()}->CT: mean TRE {np.nanmean(means):.2f} mm (spread {np.nanmin(means):.2f}-"
                  f"{np.nanmax(means):.2f}), worst max {np.nanmax(maxima):.2f} mm over {len(rows) - len(refused)} "
                  f"transforms" + (f"; refused {len(refused)}: {refused[0]}" if refused else "") + ".", end="")
        print()
    return 0


def _sitk_version() -> str:
    import SimpleITK as sitk

    return sitk.Version_VersionString()


if __name__ == "__main__":
    sys.exit(main())
