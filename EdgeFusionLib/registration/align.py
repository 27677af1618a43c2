"""Rigid and affine registration by Mattes mutual information (SimpleITK), deterministic.

The method (docs/registration.md):

1. Both images become float scalar volumes (an RGB image: its luma) and are averaged down
   (``BinShrink``, which keeps the physical placement) to voxels of about 8, 4, 2 and 1 mm
   (``LEVELS_MM``); an image coarser than a level keeps its own voxels there.
2. A head mask of each image (Otsu threshold of the 4 mm volume above its padding value,
   opened, largest component, holes filled, dilated by one voxel) keeps air, the CT table
   and the scanner padding out of the metric.
3. Start poses: the header geometry, and the centres of mass of the masks brought together,
   each in the patient positions of ``START_ORIENTATIONS`` (a scan made head-first against
   one made feet-first, or prone against supine, differs by 180° about one axis). Each is
   optimised briefly at 8 mm; the best metric wins.
4. From that pose, Euler3D (rigid) at 8, 4, 2 and 1 mm; for ``affine``, then an affine at 2 mm
   starting from the rigid result. Conjugate gradients with a line search (at 1 mm:
   small regular steps from the 2 mm result, as a line search costs too much there), scales
   from physical shifts, all voxels of the mask at 8 mm and a fixed random sample
   (``SAMPLING_SEED``) at finer levels. A level at which the MRI keeps the voxels of the level
   before (it is coarser), or finer than the other image's finest spacing, is skipped.
5. One thread: ITK's metrics split their sums over the global default number of threads (the
   method's own ``SetNumberOfThreads`` does not reach them), and sums added in another order
   differ in the last bits, which the optimiser amplifies. ``register`` sets the global default
   to 1 while it runs and restores it after: the result is bit-identical run to run, whatever
   ``SetGlobalDefaultNumberOfThreads`` says.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from ..errors import FusionCancelled
from ..fusion.intensity import otsu_threshold
from .plausibility import (
    check_affine_gain,
    check_coverage,
    check_pair,
    check_progress,
    check_transform,
)
from .result import Registration, RegistrationError, transform_sizes

LEVELS_MM = (8.0, 4.0, 2.0, 1.0)
AFFINE_LEVELS_MM = (2.0,)  # line search only, from the rigid result: every step improves
MASK_LEVEL_MM = 4.0
STEP_LEVEL_MM = 1.0  # levels this fine refine with small fixed steps (a line search costs too much there)
HISTOGRAM_BINS = 32
SAMPLING_PERCENTAGE = 0.15  # of the fixed voxels (those outside the mask are dropped), after the first level
MAX_SAMPLES = 200_000  # voxels drawn at most per level: the cost of fine levels stays bounded
SAMPLING_SEED = 20260
ITERATIONS = 200  # per level
START_ITERATIONS = 40  # per start pose, at the coarsest level
CONVERGENCE_CHANGE = 1e-5  # of the metric over the last CONVERGENCE_WINDOW iterations
CONVERGENCE_WINDOW = 5
# Rotations (about the x, y, z axes, radians) of the patient positions tried as start poses.
START_ORIENTATIONS = {
    "": (0.0, 0.0, 0.0),
    "rotated 180° about x": (math.pi, 0.0, 0.0),
    "rotated 180° about y": (0.0, math.pi, 0.0),
    "rotated 180° about z": (0.0, 0.0, math.pi),
}
# A turned start must beat the unturned one by this much (metric units) to be taken: a head's
# symmetry must not flip a pair that its headers already place the right way round.
TURN_MARGIN = 0.02
MIN_RELATIVE_COVERAGE = 0.8

Progress = Callable[[float], None]
Cancel = Callable[[], bool]


def _sitk():
    import SimpleITK as sitk

    return sitk


def register(mri, other, kind: str = "rigid", *, progress: Progress | None = None, cancel: Cancel | None = None,
             label: str = "other image") -> Registration:
    """Register ``other`` (CT/SPECT/PET, SimpleITK image) onto ``mri``; see the module docstring.

    kind:     'rigid' (6 parameters) or 'affine' (12).
    progress: called with the fraction done (0..1).
    cancel:   returning True stops the work and raises FusionCancelled.
    Raises RegistrationError before any work for a pair that cannot be registered (2D,
    constant, other patient, no overlap) and after it for a result that is not believable.
    """
    sitk = _sitk()
    if kind not in ("rigid", "affine"):
        raise RegistrationError(f"unknown registration kind {kind!r}: use rigid or affine")
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        return _register(mri, other, kind, progress, cancel, label)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def _register(mri, other, kind: str, progress: Progress | None, cancel: Cancel | None, label: str) -> Registration:
    sitk = _sitk()
    started = time.perf_counter()
    check_pair(mri, other, label)  # the images as read: their metadata name the patient
    fixed, moving = scalar_volume(mri, "MRI"), scalar_volume(other, label)
    watcher = _Watcher(progress, cancel, steps=len(LEVELS_MM) + 1 + (len(AFFINE_LEVELS_MM) if kind == "affine" else 0))
    # (levels that are skipped below still count as steps: progress then jumps, never goes back)

    fixed_levels = [shrink_to(fixed, size) for size in LEVELS_MM]
    moving_levels = [shrink_to(moving, size) for size in LEVELS_MM]
    fixed_mask = head_mask(fixed_levels[LEVELS_MM.index(MASK_LEVEL_MM)])
    moving_mask = head_mask(moving_levels[LEVELS_MM.index(MASK_LEVEL_MM)])
    # The metric samples the MRI's grid: a level at which the MRI keeps the voxels of the level before
    # (it is coarser) adds nothing but noise (small steps on a coarse, sparsely sampled grid drift).
    # Nor do levels finer than the other image's finest spacing: a PET of 3-5 mm voxels matched against
    # the MRI's fine detail at 1-2 mm pulls towards what the PET cannot show (measured: docs/registration.md).
    finest = min(moving.GetSpacing())
    kept = [0] + [index for index in range(1, len(LEVELS_MM))
                  if fixed_levels[index].GetSize() != fixed_levels[index - 1].GetSize()
                  and LEVELS_MM[index] >= finest * 0.99]
    for mask, role in ((fixed_mask, "MRI"), (moving_mask, label)):
        if mask is None:
            raise RegistrationError(f"cannot find the head in the {role}: it has no region clearly brighter than its "
                                    "background; check the image")
    watcher.check()

    starts = start_poses(fixed, moving, fixed_mask, moving_mask)
    scored = []
    for name, _, transform in starts:
        method = _method(fixed_mask, moving_mask, START_ITERATIONS, LEVELS_MM[0], sample=0)
        method.SetInitialTransform(transform, inPlace=True)
        watcher.attach(method)
        try:
            _execute(method, fixed_levels[0], moving_levels[0], watcher)
        except RegistrationError:  # this start drifted out of the other image: the others compete
            continue
        scored.append((method.GetMetricValue(), mask_coverage(transform, fixed_mask, moving_mask), name, transform))
    if not scored:
        raise RegistrationError(f"registration failed from every start pose: the MRI and the {label} do not overlap "
                                "enough; check the pair")
    watcher.step_done()
    _, _, start_name, start = _pick_start(scored)
    _, orientation, initial = next(entry for entry in start_poses(fixed, moving, fixed_mask, moving_mask)
                                   if entry[0] == start_name)
    start_rotation = np.array(sitk.Euler3DTransform((0, 0, 0), *START_ORIENTATIONS[orientation]).GetMatrix()).reshape(3, 3)

    # The metric at the start pose and at the result: the same sampled finest level.
    metric_start = _metric_at(initial, fixed_levels[kept[-1]], moving_levels[kept[-1]], fixed_mask, moving_mask)
    transform = sitk.Euler3DTransform(start)
    iterations = 0
    stop, converged = "", True
    for index in kept:
        fixed_level, moving_level, size = fixed_levels[index], moving_levels[index], LEVELS_MM[index]
        method = _method(fixed_mask, moving_mask, ITERATIONS, size, sample=_sampling(fixed_level) if index else 0)
        method.SetInitialTransform(transform, inPlace=True)
        watcher.attach(method)
        _execute(method, fixed_level, moving_level, watcher)
        iterations += method.GetOptimizerIteration()
        stop, converged = method.GetOptimizerStopConditionDescription(), _converged(method)
        watcher.step_done()
    if kind == "affine":
        # the affine levels the MRI has (at least the coarsest); judged at the finest of them, as the
        # rigid result was refined at a finer level still
        affine_levels = [index for index in kept if LEVELS_MM[index] in AFFINE_LEVELS_MM] or [
            max(index for index in kept if LEVELS_MM[index] >= min(AFFINE_LEVELS_MM))]
        last = affine_levels[-1]
        rigid_metric = _metric_at(transform, fixed_levels[last], moving_levels[last], fixed_mask, moving_mask)
        affine = sitk.AffineTransform(3)
        affine.SetCenter(transform.GetCenter())
        affine.SetMatrix(transform.GetMatrix())
        affine.SetTranslation(transform.GetTranslation())
        transform = affine
        for index in affine_levels:
            method = _method(fixed_mask, moving_mask, ITERATIONS, LEVELS_MM[index], sample=_sampling(fixed_levels[index]))
            method.SetInitialTransform(transform, inPlace=True)
            watcher.attach(method)
            _execute(method, fixed_levels[index], moving_levels[index], watcher)
            iterations += method.GetOptimizerIteration()
            stop, converged = method.GetOptimizerStopConditionDescription(), _converged(method)
            watcher.step_done()
    metric_final = _metric_at(transform, fixed_levels[kept[-1]], moving_levels[kept[-1]], fixed_mask, moving_mask)
    if kind == "affine":
        check_affine_gain(rigid_metric, _metric_at(transform, fixed_levels[last], moving_levels[last], fixed_mask,
                                                   moving_mask))

    centre = image_centre(fixed)
    check_progress(metric_start, metric_final, converged, stop)
    check_transform(kind, transform, start_rotation, centre)
    check_coverage(mask_coverage(transform, fixed_mask, moving_mask), label)
    rotation, translation = transform_sizes(transform, centre)
    return Registration(kind=kind, transform=transform, metric_start=metric_start, metric_final=metric_final,
                        rotation_deg=rotation, translation_mm=translation, seconds=time.perf_counter() - started,
                        start=start_name, iterations=iterations)


# ------------------------------------------------------------------ images and masks

def scalar_volume(image, role: str):
    """``image`` as float32 scalar (an RGB image: its BT.601 luma), same geometry."""
    sitk = _sitk()
    components = image.GetNumberOfComponentsPerPixel()
    if components == 1:
        return sitk.Cast(image, sitk.sitkFloat32)
    if components not in (3, 4):
        raise RegistrationError(f"cannot register the {role}: it has {components} channels; expected grey or RGB")
    from ..fusion.colour import luma

    values = sitk.GetArrayViewFromImage(image)[..., :3].astype(np.float32)
    scalar = sitk.GetImageFromArray(luma(values))
    scalar.CopyInformation(image)
    return scalar


def shrink_to(image, size_mm: float):
    """``image`` averaged down by whole voxels per axis so that voxels are about ``size_mm`` (never finer)."""
    sitk = _sitk()
    factors = [max(1, round(size_mm / spacing)) for spacing in image.GetSpacing()]
    return image if factors == [1, 1, 1] else sitk.BinShrink(image, factors)


def head_mask(image):
    """A uint8 mask of the head (largest bright region, holes filled, one voxel dilated), or None.

    The threshold is Otsu's over the voxels above the image's minimum (scanner padding such as
    -2048 outside a CT's field of view is left out) between its 0.5th and 99.5th percentiles.
    Where the background is exactly the minimum (no noise, e.g. a synthetic or masked image),
    Otsu's threshold splits the head itself (soft tissue from bone) and leaves only a shell that
    the opening removes: then everything above the minimum is the head.
    """
    sitk = _sitk()
    values = sitk.GetArrayViewFromImage(image)
    minimum = float(values.min())
    inside = values[values > minimum]
    if inside.size < 27:
        return None
    low, high = np.percentile(inside, [0.5, 99.5])
    if not high > low:
        return None
    threshold = otsu_threshold(np.clip(inside, low, high))
    mask = _largest_region(sitk.BinaryThreshold(image, threshold, float("inf"), 1, 0))
    if mask is None:
        mask = _largest_region(sitk.BinaryThreshold(image, np.nextafter(minimum, np.inf), float("inf"), 1, 0))
    if mask is None:
        return None
    mask = sitk.BinaryFillhole(mask)
    return sitk.BinaryDilate(mask, [1, 1, 1])


def _largest_region(mask):
    """The largest connected region of a binary mask after an opening (thin shells: a CT's table, a holder), or None."""
    sitk = _sitk()
    mask = sitk.BinaryMorphologicalOpening(mask, [1, 1, 1])
    components = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    mask = sitk.Cast(components == 1, sitk.sitkUInt8)
    return mask if sitk.GetArrayViewFromImage(mask).sum() >= 27 else None


def image_centre(image) -> np.ndarray:
    """Physical centre (mm) of an image's voxel grid."""
    return np.array(image.TransformContinuousIndexToPhysicalPoint([(size - 1) / 2 for size in image.GetSize()]))


def mask_centre(mask) -> np.ndarray:
    sitk = _sitk()
    statistics = sitk.LabelShapeStatisticsImageFilter()
    statistics.Execute(mask)
    return np.array(statistics.GetCentroid(1))


# ------------------------------------------------------------------ start poses

def start_poses(fixed, moving, fixed_mask, moving_mask) -> list:
    """(name, orientation, Euler3DTransform) start poses: header geometry and centres of mass, in each patient position.

    Rotations turn about the MRI's head centre; the geometry start keeps the header's placement of
    that centre, the centre-of-mass start moves it onto the other image's head centre.
    """
    sitk = _sitk()
    fixed_centre = mask_centre(fixed_mask)
    moving_centre = mask_centre(moving_mask)
    poses = []
    for placement, target in (("geometry", fixed_centre), ("centres of mass", moving_centre)):
        for orientation, angles in START_ORIENTATIONS.items():
            transform = sitk.Euler3DTransform(fixed_centre.tolist(), *angles, (target - fixed_centre).tolist())
            poses.append((f"{orientation} ({placement})" if orientation else placement, orientation, transform))
    return poses


def mask_coverage(transform, fixed_mask, moving_mask) -> float:
    """The overlap of the two head masks under ``transform``, as a fraction of the smaller one (mm³).

    Relative to the smaller mask, so that a scan covering part of the head (thick MRI slices over
    the brain only, a CT of the skull base) is fully covered when it is in place.
    """
    sitk = _sitk()
    moved = sitk.Resample(moving_mask, fixed_mask, transform, sitk.sitkNearestNeighbor, 0)
    fixed = sitk.GetArrayViewFromImage(fixed_mask) > 0
    overlap = float((sitk.GetArrayViewFromImage(moved)[fixed] > 0).sum()) * _voxel_volume(fixed_mask)
    volumes = [float((sitk.GetArrayViewFromImage(mask) > 0).sum()) * _voxel_volume(mask)
               for mask in (fixed_mask, moving_mask)]
    return min(overlap / min(volumes), 1.0)


def _voxel_volume(image) -> float:
    return float(np.prod(image.GetSpacing()))


def _pick_start(scored):
    """The best of the (metric, coverage, name, transform) starts after their short optimisation.

    Mutual information can be high for a small overlap (an edge of one head on the other), so
    only starts covering at least ``MIN_RELATIVE_COVERAGE`` of the best coverage compete; among
    them a turned start must beat the best unturned one by ``TURN_MARGIN``.
    """
    best_coverage = max(entry[1] for entry in scored)
    eligible = [entry for entry in scored if entry[1] >= MIN_RELATIVE_COVERAGE * best_coverage]
    best = min(eligible, key=lambda entry: entry[0])
    unturned = [entry for entry in eligible if entry[2] in ("geometry", "centres of mass")]
    if unturned and best[2] not in ("geometry", "centres of mass"):
        best_unturned = min(unturned, key=lambda entry: entry[0])
        if not best[0] < best_unturned[0] - TURN_MARGIN:
            best = best_unturned
    return best


# ------------------------------------------------------------------ optimisation

def _sampling(fixed_level) -> float:
    """Fraction of a level's voxels to sample: ``SAMPLING_PERCENTAGE``, at most ``MAX_SAMPLES`` voxels."""
    return min(SAMPLING_PERCENTAGE, MAX_SAMPLES / float(np.prod(fixed_level.GetSize())))


def _method(fixed_mask, moving_mask, iterations: int, size_mm: float, *, sample: float):
    """A registration method for one level; ``sample``: the fraction of voxels sampled (0: all, no sampling)."""
    sitk = _sitk()
    method = sitk.ImageRegistrationMethod()
    method.SetNumberOfThreads(1)  # bit-identical results: one summation order
    method.SetMetricAsMattesMutualInformation(HISTOGRAM_BINS)
    if sample:
        method.SetMetricSamplingStrategy(method.RANDOM)
        method.SetMetricSamplingPercentage(sample, SAMPLING_SEED)
    else:
        method.SetMetricSamplingStrategy(method.NONE)
    method.SetMetricFixedMask(fixed_mask)
    method.SetMetricMovingMask(moving_mask)
    method.SetInterpolator(sitk.sitkLinear)
    # Conjugate gradients with a line search: a step never makes the metric worse (a fixed-step
    # descent restarted at a finer level can jump out of the optimum it was in). Steps are
    # estimated in mm of voxel displacement (scales from physical shifts), at most half a level voxel
    # times the line search's upper limit; converged when the metric stops changing.
    if size_mm <= STEP_LEVEL_MM:
        # From the pose of the level before: steps of at most a quarter voxel, halved when the
        # direction turns, down to 1/100 voxel.
        method.SetOptimizerAsRegularStepGradientDescent(learningRate=size_mm / 4, minStep=size_mm / 100,
                                                        numberOfIterations=iterations, relaxationFactor=0.5,
                                                        gradientMagnitudeTolerance=1e-8)
        method.SetOptimizerScalesFromPhysicalShift()
        return method
    method.SetOptimizerAsConjugateGradientLineSearch(
        learningRate=1.0, numberOfIterations=iterations, convergenceMinimumValue=CONVERGENCE_CHANGE,
        convergenceWindowSize=CONVERGENCE_WINDOW, lineSearchLowerLimit=0.0, lineSearchUpperLimit=2.0,
        lineSearchEpsilon=0.01, lineSearchMaximumIterations=20, estimateLearningRate=method.EachIteration,
        maximumStepSizeInPhysicalUnits=size_mm / 2)
    method.SetOptimizerScalesFromPhysicalShift()
    return method


def _metric_at(transform, fixed, moving, fixed_mask, moving_mask) -> float:
    method = _method(fixed_mask, moving_mask, 1, LEVELS_MM[-1], sample=_sampling(fixed))
    method.SetInitialTransform(transform, inPlace=False)
    try:
        return float(method.MetricEvaluate(fixed, moving))
    except RuntimeError as error:
        raise RegistrationError(f"the images do not overlap at the start or the result ({_reason(error)}); "
                                "check the pair") from None


def _converged(method) -> bool:
    return "Maximum number of iterations" not in method.GetOptimizerStopConditionDescription()


def _execute(method, fixed, moving, watcher) -> None:
    try:
        method.Execute(fixed, moving)
    except RuntimeError as error:
        if watcher.cancelled:
            raise FusionCancelled("registration cancelled") from None
        raise RegistrationError(f"registration failed: {_reason(error)}; check that the images overlap and are of "
                                "the same patient") from None


def _reason(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = next((line for line in lines if "Too many samples" in line or "ERROR" in line or "error" in line),
                lines[-1] if lines else "unknown error")
    return text.split("ERROR:")[-1].strip()[:200]


class _Watcher:
    """Progress over the steps (start search, levels) and cancel during the optimisation."""

    def __init__(self, progress: Progress | None, cancel: Cancel | None, steps: int):
        self.progress, self.cancel, self.steps = progress, cancel, steps
        self.done = 0
        self.reported = 0.0
        self.cancelled = False
        self.method = None

    def check(self) -> None:
        if self.cancel is not None and self.cancel():
            self.cancelled = True
            raise FusionCancelled("registration cancelled")

    def attach(self, method) -> None:
        self.method = method
        method.AddCommand(_sitk().sitkIterationEvent, self._iteration)

    def _iteration(self) -> None:
        self.check()  # the exception stops Execute; _execute turns it back into FusionCancelled
        if self.method is not None:
            within = min(self.method.GetOptimizerIteration() / ITERATIONS, 0.99)
            self._report((self.done + within) / self.steps)

    def step_done(self) -> None:
        self.done += 1
        self.check()
        self._report(self.done / self.steps)

    def _report(self, fraction: float) -> None:
        """Report ``fraction`` (never less than before: each start pose restarts its iterations)."""
        fraction = min(max(fraction, self.reported), 1.0)
        self.reported = fraction
        if self.progress is not None:
            self.progress(fraction)
