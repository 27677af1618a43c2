"""itk-elastix's default rigid registration on the same known-transform task, for the choice in docs/registration.md.

    python -m venv /tmp/elx && /tmp/elx/bin/pip install itk-elastix SimpleITK numpy
    PYTHONPATH=. /tmp/elx/bin/python benchmarks/bench_elastix.py [--transforms 3] [--seed 7]

Not a dependency of EdgeFusion: this script is how the choice was measured. It moves the real MRI-DIR
CT by the first ``--transforms`` transforms of ``bench_registration.py`` (same seed), registers the
CT to each moved CT and the T2 MR to the CT with elastix's default "rigid" parameter map (Mattes MI,
4 levels, adaptive stochastic gradient descent, centre-of-geometry initialisation), and prints TRE over
the CT's head mask and the time, beside EdgeFusion's numbers from ``bench_registration.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_registration import DATA, apply, mask_points, moved, random_rigid

from EdgeFusionLib.io.images import read_image


def elastix_rigid(fixed, moving):
    """(SimpleITK Euler3DTransform mapping fixed to moving points, seconds) from elastix's default rigid map."""
    import itk
    import SimpleITK as sitk

    def to_itk(image):
        converted = itk.GetImageFromArray(sitk.GetArrayFromImage(sitk.Cast(image, sitk.sitkFloat32)))
        converted.SetOrigin(image.GetOrigin())
        converted.SetSpacing(image.GetSpacing())
        converted.SetDirection(np.array(image.GetDirection()).reshape(3, 3))
        return converted

    parameters = itk.ParameterObject.New()
    parameters.AddParameterMap(parameters.GetDefaultParameterMap("rigid"))
    started = time.perf_counter()
    _, result = itk.elastix_registration_method(to_itk(fixed), to_itk(moving), parameter_object=parameters,
                                                log_to_console=False)
    seconds = time.perf_counter() - started
    values = [float(v) for v in result.GetParameter(0, "TransformParameters")]
    centre = [float(v) for v in result.GetParameter(0, "CenterOfRotationPoint")]
    return sitk.Euler3DTransform(centre, *values[:3], values[3:]), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transforms", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    ct = read_image(DATA / "mridir" / "MRIDIR-porcine-head-CT.nrrd")
    mr = read_image(DATA / "mridir" / "MRIDIR-porcine-head-MR-T2.nrrd")
    points = mask_points(ct)
    rng = np.random.default_rng(args.seed)
    centre = points.mean(axis=0)
    print("| # | CT->moved CT TRE mean (mm) | max | seconds |")
    print("|---|---|---|---|")
    for index in range(args.transforms):
        truth = random_rigid(rng, centre)
        found, seconds = elastix_rigid(ct, moved(ct, truth))
        errors = np.linalg.norm(apply(found, points) - apply(truth, points), axis=1)
        print(f"| {index + 1} | {errors.mean():.2f} | {errors.max():.2f} | {seconds:.1f} |")
    found, seconds = elastix_rigid(mr, ct)
    angle = np.degrees(np.arccos(np.clip((np.trace(np.reshape(found.GetMatrix(), (3, 3))) - 1) / 2, -1, 1)))
    print(f"\nMRI-DIR T2 MR -> CT (the pair as scanned): rotation {angle:.1f}°, {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
