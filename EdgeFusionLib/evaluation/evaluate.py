"""``edgefusion evaluate``: score fusion methods over a folder of registered image pairs.

Reads every pair of ``DIR/<task>/`` (the layout of ``../shared/data/harvard``, see
``atlas``), fuses it with each method, scores the fusion with the 13 metrics of
``metrics.METRICS`` (on the luma Y for colour SPECT/PET, docs/method.md §3), and
writes to the output folder:

* ``results.md``: mean +- std per metric per method, mean rank, seconds per pair, and the
  salient-structure measures (``metrics.SALIENT_METRICS``: what the 13 do not see);
* ``results.csv``: the same numbers, one row per method;
* ``results.json``: means, stds, mean ranks and every per-pair value;
* ``figure.png``: example pairs with each method's fusion, then per-metric bar charts.

Every method is scored on the image ``edgefusion batch`` would write for it (``as_written``):
8-bit grey, or 8-bit RGB with the fused luma and the other image's chroma. That is what a
user and an external evaluation receive; sub-grey-level differences that the PNG drops do
not decide the pixel metrics (FMI counted faint noise in the black background, measured).

Network methods run through the same ``FusionEngine`` as ``edgefusion fuse`` (``fuse_2d_arrays``
calls its ``fuse_grey``; the delivered image is ``colour.delivered_8bit`` in both). ``--cache DIR``
keeps each delivered fusion on disk, keyed by the method, the weights' sha256 and the fusion code,
so that re-scoring or cross-validating (``selection``) does not fuse again; ``--every N`` scores
every Nth pair only.

Nothing is written until every pair is scored, and each file is written to a temporary
name and renamed, so a failed or interrupted run leaves no half-written output.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import importlib
import io
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from EdgeFusionLib.evaluation.metrics import METRIC_LABELS, METRICS, SALIENT_METRICS, compute_metrics, mean_rank
from EdgeFusionLib.fusion.baselines import PIXEL_METHODS
from EdgeFusionLib.fusion.colour import delivered_8bit, luma, replace_luma
from EdgeFusionLib.io import atlas
from EdgeFusionLib.io.files import write_bytes_atomic

from EdgeFusionLib.modality import TASKS, check_task

#: The files written to the output folder, by kind.
OUTPUT_FILES = {"markdown": "results.md", "csv": "results.csv", "json": "results.json", "figure": "figure.png"}

#: Exit status of ``run_cli`` for bad arguments or data (the ``edgefusion`` convention).
EXIT_BAD_INPUT = 2

#: Pairs shown with every method's fusion in figure.png by default. Use 0 for a report that
#: goes into the repository: the atlas images (and crops of them) must not be copied there.
EXAMPLE_PAIRS = 3

# Decimals per metric in the markdown table (the rest use 3).
_DECIMALS = {"psnr": 2, "sd": 4, "sf": 4, "ag": 4}

Fuser = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class LoadedPair:
    """One pair as the metrics see it: grey MRI and grey (luma) other modality in [0, 1]."""

    pair: atlas.Pair
    mri: np.ndarray
    other: np.ndarray
    other_rgb: np.ndarray | None  # the colour original of a pseudo-colour image, for display


# ---------------------------------------------------------------------------
# Inputs


def load_pair(pair: atlas.Pair) -> LoadedPair:
    mri, _ = atlas.read_grey01(pair.mri_path)
    other, other_rgb = atlas.read_grey01(pair.other_path)
    if mri.shape != other.shape:
        raise ValueError(
            f"pair {pair.name}: MRI {mri.shape[1]}x{mri.shape[0]} and {pair.other_path.parent.name} "
            f"{other.shape[1]}x{other.shape[0]} differ; the images of a pair must be registered"
        )
    return LoadedPair(pair, mri, other, other_rgb)


def as_written(fused: np.ndarray, loaded: LoadedPair) -> np.ndarray:
    """The grey/luma in [0, 1] of the PNG ``edgefusion batch`` writes for ``fused`` (H, W) in [0, 1]:
    rounded to 8 bits, through 8-bit RGB with the original chroma when the other image is colour."""
    delivered = delivered_8bit(fused, loaded.other_rgb) / np.float32(255.0)
    return delivered if loaded.other_rgb is None else np.clip(luma(delivered), 0.0, 1.0)


def select_pairs(
    data_dir: Path | str, task: str, cases: Sequence[str] | None = None, limit: int | None = None, every: int = 1
) -> list[atlas.Pair]:
    """The pairs of ``data_dir/<task>``, optionally only those of ``cases``, then every ``every``-th
    (by name, so each case keeps pairs spread over its slices), then the first ``limit``."""
    pairs = atlas.task_pairs(data_dir, task)
    if cases is not None:
        cases = [str(case) for case in cases]
        present = sorted({pair.case for pair in pairs})
        missing = [case for case in cases if case not in present]
        if missing:
            raise ValueError(
                f"no pairs of case {', '.join(missing)} in {Path(data_dir) / task}; cases there: {', '.join(present)}"
            )
        pairs = [pair for pair in pairs if pair.case in cases]
    if every < 1:
        raise ValueError(f"every must be at least 1, got {every}")
    pairs = pairs[::every]
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        pairs = pairs[:limit]
    return pairs


# ---------------------------------------------------------------------------
# Methods


# The network side is imported when needed, by module name: evaluating pixel baselines needs no
# torch, and tests can stand in for the registry and the engine through sys.modules.


def default_methods(task: str) -> list[str]:
    """The task's default network method and every pixel baseline."""
    network = [importlib.import_module("EdgeFusionLib.fusion.methods").DEFAULT_METHOD[task]]
    return network + [name for name in PIXEL_METHODS if name not in network]


def method_fusers(methods: Sequence[str], task: str, device: str = "auto") -> dict[str, Fuser]:
    """{method: fn(mri01, other01) -> fused01}; raises ValueError for an unknown method.

    Pixel baselines run directly; any other name is a network method of
    ``EdgeFusionLib.fusion.pipeline.fuse_2d_arrays``.
    """
    if not methods:
        raise ValueError("no methods to evaluate")
    methods = list(dict.fromkeys(methods))  # drop repeats, keep order
    known = list(importlib.import_module("EdgeFusionLib.fusion.methods").method_names())
    fusers: dict[str, Fuser] = {}
    for method in methods:
        if method in PIXEL_METHODS:
            fusers[method] = PIXEL_METHODS[method]
            continue
        if method not in known:
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(known)}")
        fusion = importlib.import_module("EdgeFusionLib.fusion.pipeline")
        fusers[method] = _network_fuser(fusion.fuse_2d_arrays, task, method, device)
    return fusers


def _network_fuser(fuse_2d_arrays: Callable, task: str, method: str, device: str) -> Fuser:
    def fuse(mri: np.ndarray, other: np.ndarray) -> np.ndarray:
        return fuse_2d_arrays(mri, other, task, method, device=device)

    return fuse


# ---------------------------------------------------------------------------
# Cache of delivered fusions

#: Fusion source files whose text is part of a cache key: a change in any of them fuses anew.
_NETWORK_SOURCES = ("rules.py", "salient.py", "engine.py")
_PIXEL_SOURCES = ("baselines.py",)
_COLOUR_SOURCES = ("colour.py",)  # the delivered RGB of a colour task


def cache_key(task: str, method: str) -> str:
    """A key that changes when anything that makes ``method``'s delivered fusion changes: the method
    name, the task's weights (sha256, network methods only) and the text of the fusion code."""
    import hashlib

    network = method not in PIXEL_METHODS
    sources = (_NETWORK_SOURCES if network else _PIXEL_SOURCES) + (_COLOUR_SOURCES if check_task(task).shown_in_colour else ())
    digest = hashlib.sha256(f"{task}\0{method}".encode())
    fusion_dir = Path(__file__).resolve().parent.parent / "fusion"
    for name in sources:
        digest.update((fusion_dir / name).read_bytes())
    if network:
        weights = importlib.import_module("EdgeFusionLib.model.weights")
        entry = weights.read_manifest()["models"].get(task, {})
        digest.update(str(entry.get("sha256")).encode())
    return digest.hexdigest()[:16]


class FusionCache:
    """Delivered fusions (float32 grey/luma in [0, 1]) and their fusion seconds, one .npz per pair under
    ``folder/<task>/<method>-<cache_key>/``. ``None`` folder: nothing is kept."""

    def __init__(self, folder: Path | str | None, task: str, methods: Sequence[str]):
        self.folders = {} if folder is None else {
            method: Path(folder) / task / f"{method}-{cache_key(task, method)}" for method in methods}

    def get(self, method: str, pair: atlas.Pair) -> tuple[np.ndarray, float] | None:
        path = self.folders.get(method)
        if path is None or not (path / f"{pair.name}.npz").is_file():
            return None
        with np.load(path / f"{pair.name}.npz") as stored:
            return stored["fused"], float(stored["seconds"])

    def put(self, method: str, pair: atlas.Pair, fused: np.ndarray, seconds: float) -> None:
        path = self.folders.get(method)
        if path is None:
            return
        path.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, fused=fused.astype(np.float32), seconds=np.float64(seconds))
        write_bytes_atomic(path / f"{pair.name}.npz", buffer.getvalue())


# ---------------------------------------------------------------------------
# Evaluation


def run_evaluation(
    data_dir: Path | str,
    task: str,
    methods: Sequence[str],
    out_dir: Path | str,
    device: str = "auto",
    limit: int | None = None,
    cases: Sequence[str] | None = None,
    progress: bool = True,
    examples: int = EXAMPLE_PAIRS,
    every: int = 1,
    cache: Path | str | None = None,
) -> dict:
    """Fuse and score every selected pair with every method; write the report; return the results.

    ``cases`` keeps only those atlas cases (e.g. ``atlas.VALIDATION_CASES[task]``), ``limit``
    the first N pairs after that (``every``: every Nth pair before that); ``examples`` pairs are
    shown in the figure (0: bar charts only); ``cache`` a folder of delivered fusions (``FusionCache``). Each method is timed after one untimed warm-up fusion (imports, model loading).
    Returns the dict written to ``results.json`` (NaN kept as float) plus ``outputs``, the
    paths written. Raises ValueError for bad arguments or data, before any file is written.
    """
    check_task(task)
    if examples < 0:
        raise ValueError(f"examples must be 0 or more, got {examples}")
    fusers = method_fusers(methods, task, device)
    pairs = select_pairs(data_dir, task, cases, limit, every)
    records, example_images, shapes = _score_pairs(pairs, fusers, examples, progress=progress, label=task,
                                                   cache=FusionCache(cache, task, list(fusers)))
    results = summarise(records, task=task, pairs=pairs, shapes=shapes)
    results.update(
        data_dir=str(data_dir),
        device=device,
        command=_command_line(data_dir, task, list(fusers), cases, limit, examples, every),
        cases=sorted({pair.case for pair in pairs}),
        case_filter=None if cases is None else [str(case) for case in cases],
        limit=limit,
        every=every,
        examples=examples,
    )
    results["outputs"] = write_report(results, example_images, Path(out_dir))
    return results


def _score_pairs(
    pairs: Sequence[atlas.Pair], fusers: dict[str, Fuser], examples: int, progress: bool, label: str,
    cache: FusionCache | None = None,
) -> tuple[dict[str, list[dict]], list[tuple[LoadedPair, dict[str, np.ndarray]]], set[tuple[int, int]]]:
    """Per-method lists of per-pair records, the example pairs with their fusions, the image shapes.

    A fusion found in ``cache`` is scored without fusing (its recorded seconds are reported).
    """
    from tqdm import tqdm

    # examples spread evenly over the (name-sorted, so case-grouped) pairs
    example_indices = set(np.linspace(0, len(pairs) - 1, min(examples, len(pairs))).round().astype(int).tolist())
    cache = cache or FusionCache(None, label, [])
    names = [*METRICS, *SALIENT_METRICS]
    records: dict[str, list[dict]] = {method: [] for method in fusers}
    warmed = False
    example_images = []
    shapes = set()
    bar = tqdm(total=len(pairs), desc=f"evaluate {label}", unit="pair", disable=not (progress and sys.stderr.isatty()))
    with bar:
        for index, pair in enumerate(pairs):
            loaded = load_pair(pair)
            shapes.add(loaded.mri.shape)
            cached = {method: cache.get(method, pair) for method in fusers}
            if not warmed and any(hit is None for hit in cached.values()):
                _warm_up({method: fuse for method, fuse in fusers.items() if cached[method] is None}, loaded)
                warmed = True
            fused_images = {}
            for method, fuse in fusers.items():
                if cached[method] is not None:
                    fused, seconds = cached[method]
                else:
                    start = time.perf_counter()
                    fused = np.asarray(fuse(loaded.mri, loaded.other), dtype=np.float32)
                    seconds = time.perf_counter() - start
                    fused = as_written(fused, loaded)
                    cache.put(method, pair, fused, seconds)
                scores = compute_metrics(fused, loaded.mri, loaded.other, names=names)
                records[method].append({"pair": pair.name, "case": pair.case, "seconds": seconds, **scores})
                fused_images[method] = fused
            if index in example_indices:
                example_images.append((loaded, fused_images))
            bar.update(1)
    return records, example_images, shapes


def _warm_up(fusers: dict[str, Fuser], loaded: LoadedPair) -> None:
    """One untimed fusion per method, so that imports and model loading are not timed as a pair."""
    for fuse in fusers.values():
        fuse(loaded.mri, loaded.other)


def summarise(
    records: dict[str, list[dict]], task: str, pairs: Sequence[atlas.Pair], shapes: set[tuple[int, int]]
) -> dict:
    """Means, population stds and mean ranks from per-pair records (see ``run_evaluation``)."""
    metric_names = list(METRICS)
    salient_names = [name for name in SALIENT_METRICS if all(name in row for rows in records.values() for row in rows)]
    summary = {}
    for method, rows in records.items():
        columns = {name: np.array([row[name] for row in rows], dtype=np.float64)
                   for name in [*metric_names, *salient_names, "seconds"]}
        # the salient measures are NaN for a pair without the structure (e.g. no foreground): skipped
        summary[method] = {
            "mean": {name: float(values.mean()) if name not in salient_names else _nanmean(values)
                     for name, values in columns.items()},
            "std": {name: float(values.std()) if name not in salient_names else _nanstd(values)
                    for name, values in columns.items()},
        }
        for name in salient_names:
            summary[method]["mean"][f"{name}_max"] = _nanmax(columns[name])
    ranks = mean_rank({method: summary[method]["mean"] for method in summary}, metric_names)
    for method, rank in ranks.items():
        summary[method]["mean_rank"] = rank
    return {
        "task": task,
        "methods": list(records),
        "metrics": metric_names,
        "salient_metrics": salient_names,
        "pairs": [pair.name for pair in pairs],
        "n_pairs": len(pairs),
        "image_shapes": sorted(shapes),
        "summary": summary,
        "per_pair": records,
    }


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan


def _nanstd(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.std()) if finite.size else math.nan


def _nanmax(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.max()) if finite.size else math.nan


def _command_line(data_dir, task, methods, cases, limit, examples, every=1) -> str:
    parts = ["edgefusion evaluate", f"--task {task}", f"--data {data_dir}", "--methods " + " ".join(methods)]
    if cases is not None:
        parts.append("--cases " + " ".join(str(case) for case in cases))
    if every != 1:
        parts.append(f"--every {every}")
    if limit is not None:
        parts.append(f"--limit {limit}")
    if examples != EXAMPLE_PAIRS:
        parts.append(f"--examples {examples}")
    return " ".join(parts)


# ---------------------------------------------------------------------------
# Report


def _ranked_methods(results: dict) -> list[str]:
    """Methods by mean rank, best first (ties keep the order given)."""
    summary = results["summary"]
    return sorted(results["methods"], key=lambda method: summary[method]["mean_rank"])


def _format_value(value: float, decimals: int) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{decimals}f}"


def markdown_table(results: dict) -> str:
    """Methods (best mean rank first) x metrics as 'mean ± std'; best mean per column in bold."""
    summary = results["summary"]
    metric_names = results["metrics"]
    methods = _ranked_methods(results)
    best = {
        name: max((summary[m]["mean"][name] for m in methods if not math.isnan(summary[m]["mean"][name])), default=None)
        for name in metric_names
    }
    best_rank = min(summary[m]["mean_rank"] for m in methods)
    header = ["method", "mean rank ↓", *(f"{METRIC_LABELS[name]} ↑" for name in metric_names), "s/pair"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for method in methods:
        rank = f"{summary[method]['mean_rank']:.2f}"
        cells = [f"`{method}`", f"**{rank}**" if summary[method]["mean_rank"] == best_rank else rank]
        for name in metric_names:
            decimals = _DECIMALS.get(name, 3)
            mean, std = summary[method]["mean"][name], summary[method]["std"][name]
            text = f"{_format_value(mean, decimals)} ± {_format_value(std, decimals)}"
            cells.append(f"**{text}**" if mean == best[name] else text)
        cells.append(f"{summary[method]['mean']['seconds']:.3g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def salient_table(results: dict) -> str:
    """Methods (same order as ``markdown_table``) x salient measures: the mean over pairs (in % for the
    losses) and, for the losses and isolated pixels, the worst pair in brackets."""
    summary = results["summary"]
    names = results.get("salient_metrics", [])
    if not names:
        return ""
    header = ["method", *(METRIC_LABELS[name] + (" ↓" if name.startswith(("salient_loss", "isolated")) else " (1 = kept)")
                          for name in names)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * len(names)]
    for method in _ranked_methods(results):
        cells = [f"`{method}`"]
        for name in names:
            mean, worst = summary[method]["mean"][name], summary[method]["mean"].get(f"{name}_max", math.nan)
            if name.startswith("salient_loss"):
                cells.append(f"{_format_value(100 * mean, 2)} % (max {_format_value(100 * worst, 1)} %)")
            elif name == "isolated_pixels":
                cells.append(f"{_format_value(mean, 2)} (max {_format_value(worst, 0)})")
            else:
                cells.append(_format_value(mean, 3))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _shape_text(shapes: Sequence[Sequence[int]]) -> str:
    sizes = [f"{width}×{height}" for height, width in shapes]
    if len(sizes) == 1:
        return sizes[0]
    return f"{len(sizes)} sizes ({', '.join(sizes[:4])}{', …' if len(sizes) > 4 else ''})"


def _selection_text(results: dict) -> str:
    """'All 36 pairs of cases 16, 32 in `DIR/MRI-CT`' and the like."""
    where = f"`{results['data_dir']}/{results['task']}`"
    count = f"{results['n_pairs']} pairs"
    count = f"the first {count} (by name)" if results["limit"] is not None else f"all {count}"
    if results.get("every", 1) != 1:
        count = f"every {results['every']}th pair, {count.replace('all ', '')},"
    if results["case_filter"] is None:
        text = f"{count} in {where} (cases {', '.join(results['cases'])})"
    else:
        cases = results["case_filter"]
        text = f"{count} of case{'s' if len(cases) > 1 else ''} {', '.join(cases)} in {where}"
    return text[0].upper() + text[1:]


def markdown_report(results: dict) -> str:
    task = results["task"]
    other = check_task(task).label
    luma_note = (
        f" {other} is compared through its luma Y (BT.601), the channel that is fused (docs/method.md §3)."
        if task != "MRI-CT"
        else ""
    )
    caption = "Example fusions and per-metric means" if results["examples"] else "Per-metric means"
    timing = "s/pair: seconds of fusion per pair, after one warm-up fusion"
    if any(method not in PIXEL_METHODS for method in results["methods"]):
        timing += f" (network methods on device `{results['device']}`)"
    return f"""# EdgeFusion evaluation: {task}

{_selection_text(results)}, images {_shape_text(results['image_shapes'])}. Each cell is the mean ± \
standard deviation over the pairs of a metric of the fused image F against both sources (MRI and {other}); \
F is the 8-bit image `edgefusion batch` writes.{luma_note} Higher is better for every metric; **mean rank** is each method's rank per metric (1 = best) \
averaged over the {len(results['metrics'])} metrics, and rows are sorted by it. Bold: best per column. {timing}.

{markdown_table(results)}

{_salient_section(results)}![{caption} (error bars: standard deviation)](figure.png)

## Metrics

Images in [0, 1]. PSNR (dB, data range 1) and SSIM (11×11 Gaussian window, σ 1.5) are averaged over \
the two sources; MI (bits, 256-bin joint histograms) is summed over them; NMI is Hossny's normalised \
MI (0–2); Qabf is the Xydeas–Petrović edge-transfer measure (Tg 0.9994, kg −15, Dg 0.5, Ta 0.9879, \
ka −22, Da 0.8, L 1); VIF is the pixel-domain VIFp of Sheikh & Bovik summed over the sources; FMI is \
Haghighat's fast feature mutual information on 3×3 windows, on raw pixels and on Sobel gradient \
magnitudes, averaged over the sources; FSIM is Zhang et al.'s feature similarity (grey), averaged; EN is \
the entropy (bits) of the 256-bin histogram of the 8-bit fused image (not the paper's count of distinct \
float values); SD, SF and AG (standard deviation, spatial frequency, average gradient) are on the [0, 1] \
scale. PSNR and SSIM against the sources reward blur toward the mean; the edge and information metrics \
(Qabf, FMI, MI, SF, AG, EN) reward keeping each source's detail: a good fusion wins on both kinds.

Reproduce with `{results['command']}`.
"""


def _salient_section(results: dict) -> str:
    table = salient_table(results)
    if not table:
        return ""
    return f"""What the 13 metrics do not see: whether each source's brightest structures survive (bone, hot \
spots, bright tissue; `metrics.SALIENT_METRICS`). A source's salient region is its brightest 10 % of the \
foreground (pixels where either source exceeds 0.05); **salient loss** is the share of that region where F \
is more than 0.25 below the source (mean over pairs, worst pair in brackets); **salient contrast** is the \
region's contrast against the rest of the foreground in F over the same in the source; **isolated pixels** \
counts specks the fusion made inside bright structures (a pixel more than 0.25 darker or brighter than \
all 8 neighbours, where no source has that speck), per pair. Not part of the mean rank.

{table}

"""


def results_csv(results: dict) -> str:
    summary = results["summary"]
    names = [*results["metrics"], *results.get("salient_metrics", []), "seconds"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "pairs", "mean_rank", *(f"{name}_{stat}" for name in names for stat in ("mean", "std"))])
    for method in _ranked_methods(results):
        values = [summary[method][stat][name] for name in names for stat in ("mean", "std")]
        writer.writerow([method, results["n_pairs"], summary[method]["mean_rank"], *values])
    return buffer.getvalue()


def _json_safe(value):
    """Non-finite floats become null: JSON has no NaN or infinity."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


_IMAGE_ROW_HEIGHT = 1.8  # inches per example pair in figure.png
_BAR_ROW_HEIGHT = 2.6  # inches per row of bar charts
_BAR_COLUMNS = 5


def figure_png(results: dict, examples: Sequence[tuple[LoadedPair, dict[str, np.ndarray]]]) -> bytes:
    """PNG of the example pairs (MRI, other, each method's fusion) above per-metric bar charts."""
    from matplotlib.figure import Figure  # a bare Figure renders with Agg, no GUI backend involved

    panels = [*results["metrics"], "seconds"]
    bar_rows = math.ceil(len(panels) / _BAR_COLUMNS)
    width = max(1.7 * (2 + len(results["methods"])), 2.9 * _BAR_COLUMNS)
    heights = [_IMAGE_ROW_HEIGHT * len(examples), _BAR_ROW_HEIGHT * bar_rows]
    figure = Figure(figsize=(width, sum(heights) + 0.6), layout="constrained")
    if examples:
        top, bottom = figure.subfigures(2, 1, height_ratios=heights)
        _draw_examples(top, results, examples)
    else:
        bottom = figure
    _draw_bars(bottom, results, panels, bar_rows)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _draw_examples(figure, results: dict, examples: Sequence[tuple[LoadedPair, dict[str, np.ndarray]]]) -> None:
    methods = results["methods"]
    columns = 2 + len(methods)
    figure.suptitle(f"{results['task']}: example pairs", fontsize="medium")
    for row, (loaded, fused_images) in enumerate(examples):
        rgb = loaded.other_rgb

        def as_delivered(fused: np.ndarray) -> np.ndarray:
            # a colour task's fusion is delivered as the fused Y with the original chroma
            return fused if rgb is None else replace_luma(rgb, fused)

        shown = [("MRI", loaded.mri), (check_task(results["task"]).label, loaded.other if rgb is None else rgb)]
        shown += [(method, as_delivered(fused)) for method, fused in fused_images.items()]
        for column, (title, image) in enumerate(shown):
            axes = figure.add_subplot(len(examples), columns, row * columns + column + 1)
            axes.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            if row == 0:
                axes.set_title(title, fontsize="small")
            if column == 0:
                axes.set_ylabel(loaded.pair.name, fontsize="small")


def _draw_bars(figure, results: dict, panels: Sequence[str], rows: int) -> None:
    methods = results["methods"]
    summary = results["summary"]
    positions = np.arange(len(methods))
    colours = [f"C{index % 10}" for index in positions]
    for index, name in enumerate(panels):
        axes = figure.add_subplot(rows, _BAR_COLUMNS, index + 1)
        means = np.array([summary[method]["mean"][name] for method in methods])
        stds = np.array([summary[method]["std"][name] for method in methods])
        finite = np.isfinite(means) & np.isfinite(stds)  # a NaN or infinite mean gets no bar
        axes.bar(positions, np.where(finite, means, 0.0), yerr=np.where(finite, stds, 0.0), color=colours)
        title = f"{METRIC_LABELS[name]} ↑" if name in METRICS else "seconds per pair ↓"
        axes.set_title(title, fontsize="small")
        axes.set_xticks(positions, methods, rotation=45, ha="right", fontsize="x-small")
        axes.tick_params(axis="y", labelsize="x-small")


def write_report(results: dict, examples, out_dir: Path) -> dict[str, str]:
    """Render every output in memory first, then write each atomically; return {kind: path}."""
    outputs = {kind: str(out_dir / name) for kind, name in OUTPUT_FILES.items()}
    contents = {
        "markdown": markdown_report(results).encode(),
        "csv": results_csv(results).encode(),
        "json": json.dumps(_json_safe({**results, "outputs": outputs}), indent=1).encode(),
        "figure": figure_png(results, examples),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for kind, data in contents.items():
        write_bytes_atomic(Path(outputs[kind]), data)
    return outputs


# ---------------------------------------------------------------------------
# Command line


def register_cli(subparsers) -> argparse.ArgumentParser:
    """Add the ``evaluate`` sub-command to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "evaluate",
        help="score fusion methods on a folder of MRI/other image pairs",
        description=(
            "Fuse every pair under DIR/<task>/ (MRI/NAME.png with CT|SPECT|PET/NAME.png) with each method and "
            "write results.md, results.csv, results.json and figure.png (13 metrics, mean ± std, mean rank, "
            "seconds per pair)."
        ),
    )
    parser.add_argument("--task", required=True, choices=list(TASKS))
    parser.add_argument(
        "--data", required=True, type=Path, metavar="DIR", help="folder holding <task>/MRI and <task>/<other>"
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        metavar="METHOD",
        help=f"methods to compare (default: the task's default network method and {', '.join(PIXEL_METHODS)})",
    )
    parser.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: out/evaluate-<task>)")
    selection = parser.add_mutually_exclusive_group()
    selection.add_argument(
        "--cases", nargs="+", metavar="CASE", help="only these cases (first two characters of a name)"
    )
    selection.add_argument(
        "--validation-cases", action="store_true", help="only the task's validation cases (atlas.VALIDATION_CASES)"
    )
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N pairs")
    parser.add_argument(
        "--examples",
        type=int,
        default=EXAMPLE_PAIRS,
        metavar="N",
        help=f"example pairs shown in figure.png (default {EXAMPLE_PAIRS}; 0 for bar charts only, e.g. for a "
        "report kept in the repository, where atlas images must not go)",
    )
    parser.add_argument(
        "--device", default="auto", help="device of the network methods: auto, cpu, cuda, ... (default auto)"
    )
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="score every Nth pair only (by name, before --limit; default 1: all)")
    parser.add_argument("--cache", type=Path, metavar="DIR",
                        help="keep each delivered fusion in DIR and reuse it when the method, weights and fusion "
                        "code are unchanged (cheap re-scoring and cross-validation)")
    parser.set_defaults(func=run_cli)
    return parser


def run_cli(args: argparse.Namespace) -> int:
    cases = atlas.VALIDATION_CASES[args.task] if args.validation_cases else args.cases
    try:
        results = run_evaluation(
            args.data,
            args.task,
            args.methods or default_methods(args.task),
            args.out or Path("out") / f"evaluate-{args.task}",
            device=args.device,
            limit=args.limit,
            cases=cases,
            examples=args.examples,
            every=args.every,
            cache=args.cache,
        )
    except (ValueError, OSError) as error:
        print(f"edgefusion evaluate: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(markdown_table(results))
    print(f"\n{results['n_pairs']} pairs; wrote " + ", ".join(results["outputs"].values()))
    return 0
