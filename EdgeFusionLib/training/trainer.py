"""Stage-1 training: EH-DRAN as an autoencoder of single images (docs/method.md §4).

``edgefusion train --task MRI-CT --data ../shared/data/harvard --out runs/mri-ct``

* Data: the pairs of ``<data>/<task>/{MRI,<OTHER>}`` split by case (the fixed
  ``atlas.VALIDATION_CASES`` when the data holds them, else a seeded case split);
  the MRI and the other-modality images (CT grey; SPECT/PET luma Y) of the training
  pairs are pooled as independent one-channel images in [0, 1], loaded once.
* Each epoch draws ``steps_per_epoch`` batches of random crops from a generator
  seeded by (seed, epoch), and re-seeds torch's global generator (dropout) the
  same way, so an epoch's result depends only on the weights and optimiser state
  it starts from: a resumed run is bit-identical to an uninterrupted one on the
  same device (on CUDA with deterministic algorithms, see ``deterministic_cuda``).
  A resume must see the same split (same data) as the run it continues.
* After each epoch the shared BatchNorm's running statistics are recalibrated on
  ``CALIBRATION_IMAGES`` full-size training images (``recalibrate_batchnorm``), so
  that validation scores the model exactly as it will be used.
* Model selection on the validation cases only (PSNR of full-size reconstructions);
  the best weights are ``best.safetensors``.
* Run folder: ``config.json``, ``split.json``, ``last.safetensors`` (model +
  Adam state as tensors, epoch and bookkeeping in the safetensors metadata; no
  pickle), ``best.safetensors``, ``log.jsonl`` and ``log.csv`` (one row per epoch),
  ``summary.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..devices import resolve_device
from ..io.atlas import VALIDATION_CASES, Pair, read_grey01, split_by_case, task_pairs
from ..io.files import atomic_path, write_json_atomic
from ..modality import TASKS, check_task

CHECKPOINT_NAME = "last.safetensors"
#: Full-size training images (evenly spaced) whose batch statistics set the BatchNorm's running
#: statistics after each epoch: ~10 s on the 2-core CPU. 64 or all 228 MRI-CT training images
#: gave validation reconstructions within 0.1 dB of each other (48.44 vs 48.52 dB).
CALIBRATION_IMAGES = 64
BEST_NAME = "best.safetensors"
CHECKPOINT_FORMAT = "edgefusion-train-checkpoint/1"
LOG_COLUMNS = ("epoch", "loss", "mse", "grad", "perc", "val_psnr", "val_ssim", "val_grad", "seconds", "best")


@dataclasses.dataclass
class TrainConfig:
    """Everything that decides the trained weights (hardware aside)."""

    task: str = "MRI-CT"
    crop_size: int = 128
    batch_size: int = 4
    lr: float = 1e-3
    epochs: int = 10
    #: Batches per epoch; 0 = one pass over the pooled training images.
    steps_per_epoch: int = 0
    lambda_grad: float = 0.2
    lambda_perc: float = 0.2
    #: "ssim" (offline substitute, default), "vgg" (needs vgg_weights) or "none".
    perceptual: str = "ssim"
    vgg_weights: str | None = None
    seed: int = 3407
    device: str = "auto"
    #: Validation images reconstructed at full size per epoch (evenly spaced over the
    #: validation pairs, both modalities); 0 = all.
    val_images: int = 16

    def validate(self) -> "TrainConfig":
        check_task(self.task)
        if self.crop_size < 16 or self.crop_size % 2:
            raise InputError(f"crop_size must be even and at least 16, got {self.crop_size}")
        for name in ("batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.steps_per_epoch < 0 or self.val_images < 0:
            raise InputError("steps_per_epoch and val_images must not be negative")
        if not self.lr > 0:
            raise InputError(f"lr must be positive, got {self.lr}")
        from .losses import PERCEPTUAL_TERMS

        if self.perceptual not in PERCEPTUAL_TERMS:
            raise InputError(f"unknown perceptual term {self.perceptual!r}; choose one of {', '.join(PERCEPTUAL_TERMS)}")
        if self.perceptual == "vgg" and not self.vgg_weights:
            raise InputError("perceptual 'vgg' needs vgg_weights (a VGG16-BN weights file)")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown training config keys: {', '.join(unknown)}")
        return cls(**values).validate()

    @classmethod
    def load(cls, path: Path | str) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise InputError(f"training config not found: {path}")
        with open(path, encoding="utf-8") as stream:
            return cls.from_dict(json.load(stream))

    def save(self, path: Path | str) -> None:
        write_json_atomic(Path(path), self.to_dict())

    def same_run_as(self, other: "TrainConfig") -> bool:
        """True when ``other`` continues this run: all settings equal except the epoch count."""
        mine, theirs = self.to_dict(), other.to_dict()
        for volatile in ("epochs", "device"):
            mine.pop(volatile)
            theirs.pop(volatile)
        return mine == theirs


# ---------------------------------------------------------------------------
# Data


def split_pairs(pairs: list[Pair], task: str, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Split by case: the fixed validation cases when present, else a seeded quarter of the cases."""
    cases = sorted({pair.case for pair in pairs})
    fixed = [case for case in VALIDATION_CASES[task] if case in cases]
    if fixed and len(fixed) < len(cases):
        return split_by_case(pairs, fixed)
    if len(cases) < 2:
        raise InputError(f"training needs images of at least two cases (one for validation), found case(s) {cases}")
    count = max(1, round(len(cases) / 4))
    chosen = np.random.default_rng(seed).choice(len(cases), size=count, replace=False)
    return split_by_case(pairs, [cases[i] for i in sorted(chosen)])


def pooled_images(pairs: list[Pair]) -> list[np.ndarray]:
    """MRI and other-modality images of the pairs as independent samples (MRI first per pair)."""
    return [read_grey01(path)[0] for pair in pairs for path in (pair.mri_path, pair.other_path)]


def evenly_spaced(items: list, count: int) -> list:
    """``count`` items spread evenly from the first to the last (all of them when ``count >= len``)."""
    if count >= len(items):
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, count).round()]


def validation_subset(pairs: list[Pair], count: int) -> list[Pair]:
    """``ceil(count / 2)`` evenly spaced pairs (all when count is 0): a fixed, cheap validation set."""
    return list(pairs) if count == 0 else evenly_spaced(pairs, math.ceil(count / 2))


def even_crop(image: np.ndarray) -> np.ndarray:
    """The image without its last row/column where its size is odd (the network needs even sizes)."""
    return image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2]


def split_record(train_pairs: list[Pair], val_pairs: list[Pair], evaluated: list[Pair]) -> dict:
    """The cases and images of each part, as written to ``split.json``."""
    return {
        "train_cases": sorted({p.case for p in train_pairs}),
        "val_cases": sorted({p.case for p in val_pairs}),
        "train_names": [p.name for p in train_pairs],
        "val_names": [p.name for p in val_pairs],
        "val_evaluated_names": [p.name for p in evaluated],
    }


@contextlib.contextmanager
def deterministic_cuda(enabled: bool = True):
    """Same seed, same GPU, same weights: cuDNN and cuBLAS in their deterministic modes while
    the block runs; the process's previous settings are restored after it.

    Convolution backward passes on CUDA are otherwise nondeterministic. Ops without a
    deterministic CUDA kernel warn instead of failing (``warn_only``).
    """
    import torch

    if not enabled:
        yield
        return
    cudnn = torch.backends.cudnn
    previous = (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled(),
                torch.is_deterministic_algorithms_warn_only_enabled())
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read by cuBLAS at its first call
    cudnn.benchmark, cudnn.deterministic = False, True
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.deterministic = previous[:2]
        torch.use_deterministic_algorithms(previous[2], warn_only=previous[3])


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for one epoch, independent of every other epoch's."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]) >> 1


def epoch_batches(images: list[np.ndarray], config: TrainConfig, epoch: int):
    """Yield ``steps`` batches (B, 1, crop, crop) of random crops, in an order fixed by (seed, epoch)."""
    import torch

    generator = torch.Generator().manual_seed(epoch_seed(config.seed, epoch))
    steps = config.steps_per_epoch or max(1, len(images) // config.batch_size)
    needed = steps * config.batch_size
    passes = math.ceil(needed / len(images))
    order = torch.cat([torch.randperm(len(images), generator=generator) for _ in range(passes)])[:needed]
    crop = config.crop_size
    for step in range(steps):
        crops = []
        for index in order[step * config.batch_size : (step + 1) * config.batch_size].tolist():
            image = images[index]
            top = int(torch.randint(0, image.shape[0] - crop + 1, (1,), generator=generator))
            left = int(torch.randint(0, image.shape[1] - crop + 1, (1,), generator=generator))
            crops.append(torch.from_numpy(image[top : top + crop, left : left + crop].copy()))
        yield torch.stack(crops).unsqueeze(1)


def check_crop_fits(images: list[np.ndarray], crop: int) -> None:
    smallest = min(min(image.shape) for image in images)
    if smallest < crop:
        raise InputError(f"crop size {crop} is larger than the smallest training image side ({smallest}); lower --crop")


# ---------------------------------------------------------------------------
# Device, seeding



def hardware_description(device) -> str:
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {os.cpu_count()} cores visible"


def seed_epoch(config: TrainConfig, epoch: int) -> None:
    """Re-seed the global generators (dropout) for this epoch; see the module docstring."""
    import torch

    torch.manual_seed(epoch_seed(config.seed, epoch) ^ 0x5EED)


# ---------------------------------------------------------------------------
# Checkpoints (safetensors only)


def save_checkpoint(path: Path, model, optimizer, config: TrainConfig, state: dict) -> None:
    """Model and Adam state as tensors; epoch, param groups, config and ``state`` as metadata."""
    import torch
    from safetensors.torch import save_file

    tensors = {f"model.{name}": t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    optim_state = optimizer.state_dict()
    for index, values in optim_state["state"].items():
        for key, value in values.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    metadata = {
        "format": CHECKPOINT_FORMAT,
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "param_groups": json.dumps(optim_state["param_groups"]),
        "state": json.dumps(state, sort_keys=True),
    }
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)


def load_checkpoint(path: Path, model, optimizer) -> tuple[TrainConfig, dict]:
    """Restore model and optimiser in place; returns (the run's config, its bookkeeping state)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as stream:
        metadata = stream.metadata() or {}
        if metadata.get("format") != CHECKPOINT_FORMAT:
            raise InputError(f"{path} is not an EdgeFusion training checkpoint")
        tensors = {key: stream.get_tensor(key) for key in stream.keys()}
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    optim_state: dict = {"state": {}, "param_groups": json.loads(metadata["param_groups"])}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            optim_state["state"].setdefault(int(index), {})[name] = value
    optimizer.load_state_dict(optim_state)
    return TrainConfig.from_dict(json.loads(metadata["config"])), json.loads(metadata["state"])


# ---------------------------------------------------------------------------
# Validation


def recalibrate_batchnorm(model, images: list[np.ndarray], device) -> None:
    """Replace the shared BatchNorm's running statistics by averages over ``images``.

    Each full-size image (cropped to even sizes) is one batch; for each use of the norm the
    running mean and variance become the mean of the per-image statistics. Training's
    moving averages lag behind weights that keep changing (and were taken on crops); these
    describe the weights as they are. Only buffers change, so training itself (batch
    statistics) is unaffected, and deterministically: recalibrating twice gives the same numbers.
    """
    import torch

    norm = model.encoder.shared_norm
    was_training, momentum = model.training, norm.momentum
    norm.reset_running_stats()
    norm.momentum = None  # cumulative average
    model.eval()
    norm.train()  # batch statistics in the norm only: dropout stays off
    try:
        with torch.no_grad():
            for image in images:
                model.encoder(torch.from_numpy(np.ascontiguousarray(even_crop(image)))[None, None].to(device))
    finally:
        norm.momentum = momentum
        model.train(was_training)


def validate(model, images: list[np.ndarray], device) -> dict[str, float]:
    """Mean PSNR, SSIM (``metrics``) and Sobel gradient loss of full-size reconstructions."""
    import torch

    from ..evaluation import metrics
    from .losses import gradient_loss

    was_training = model.training
    model.eval()
    scores = {"val_psnr": [], "val_ssim": [], "val_grad": []}
    with torch.no_grad():
        for image in images:
            even = even_crop(image)
            x = torch.from_numpy(np.ascontiguousarray(even))[None, None].to(device)
            recon = model(x).clamp(0, 1)
            out = recon[0, 0].cpu().numpy()
            scores["val_psnr"].append(metrics.psnr(out, even, even))
            scores["val_ssim"].append(metrics.ssim(out, even, even))
            scores["val_grad"].append(float(gradient_loss(recon, x)))
    model.train(was_training)
    # An exact reconstruction has PSNR inf; cap it so means and comparisons stay finite.
    return {key: float(np.mean(np.minimum(values, 100.0))) for key, values in scores.items()}


# ---------------------------------------------------------------------------
# Logs



def _read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def read_log(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_log(run_dir: Path, rows: list[dict]) -> None:
    """Rewrite log.jsonl and log.csv (small: one row per epoch)."""
    (run_dir / "log.jsonl").write_text("".join(json.dumps(row, sort_keys=True) + "\n" for row in rows), encoding="utf-8")
    lines = [",".join(LOG_COLUMNS)]
    lines += [",".join(_csv_value(row.get(column)) for column in LOG_COLUMNS) for row in rows]
    (run_dir / "log.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _csv_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def _progress(total: int, description: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="step", leave=False, disable=not enabled, dynamic_ncols=True)


# ---------------------------------------------------------------------------
# Training


def train(config: TrainConfig, data_dir: Path | str, out_dir: Path | str, progress: bool = True, resume: bool = True, log=print) -> Path:
    """Train stage 1 as configured; returns the path of the best (validation) weights.

    With ``resume`` and a checkpoint of the same run in ``out_dir``, training continues
    after its last finished epoch (``config.epochs`` may be raised to train longer).
    ``progress`` shows a tqdm bar when stderr is a terminal; ``log`` receives one line
    per epoch (and the data summary).
    """
    import torch

    config.validate()
    device = torch.device(resolve_device(config.device))
    with deterministic_cuda(enabled=device.type == "cuda"):
        return _train(config, device, Path(data_dir), Path(out_dir), progress, resume, log)


def _train(config: TrainConfig, device, data_dir: Path, out_dir: Path, progress: bool, resume: bool, log) -> Path:
    import torch

    from ..model.network import EHDRAN
    from ..model.weights import save_weights
    from .losses import ReconstructionLoss

    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = task_pairs(data_dir, config.task)
    train_pairs, val_pairs = split_pairs(pairs, config.task, config.seed)
    evaluated = validation_subset(val_pairs, config.val_images)
    split = split_record(train_pairs, val_pairs, evaluated)
    train_images = pooled_images(train_pairs)
    calibration_images = evenly_spaced(train_images, CALIBRATION_IMAGES)
    val_images = pooled_images(evaluated)
    check_crop_fits(train_images, config.crop_size)

    torch.manual_seed(config.seed)  # initial weights
    model = EHDRAN().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    criterion = ReconstructionLoss(config.lambda_grad, config.lambda_perc, config.perceptual, config.vgg_weights).to(device)

    checkpoint = out_dir / CHECKPOINT_NAME
    state = {"epoch": 0, "best_epoch": 0, "best_psnr": -math.inf, "train_seconds": 0.0}
    if resume and checkpoint.is_file():
        saved_config, state = load_checkpoint(checkpoint, model, optimizer)
        if not saved_config.same_run_as(config):
            raise InputError(f"{checkpoint} belongs to a run with other settings; use a new --out folder or --no-resume")
        # Checkpoints written before the split was kept in them: the run's split.json.
        saved_split = state.get("split") or _read_json(out_dir / "split.json")
        if saved_split is not None and saved_split != split:
            raise InputError(f"{checkpoint} was trained on other images (cases {', '.join(saved_split['train_cases'])}); "
                             "resume with the same --data, or use a new --out folder or --no-resume")
        log(f"resuming {config.task} after epoch {state['epoch']} (best val PSNR {state['best_psnr']:.2f} dB at epoch {state['best_epoch']})")
    rows = [row for row in read_log(out_dir) if row["epoch"] <= state["epoch"]]
    write_json_atomic(out_dir / "split.json", split)
    config.save(out_dir / "config.json")
    log(
        f"{config.task}: {len(train_images)} training images (cases {', '.join(split['train_cases'])}), "
        f"{len(val_images)} validation images (cases {', '.join(split['val_cases'])}), device {device}"
    )

    on_terminal = progress and sys.stderr.isatty()
    for epoch in range(state["epoch"] + 1, config.epochs + 1):
        started = time.perf_counter()
        seed_epoch(config, epoch)
        model.train()
        sums: dict[str, float] = {}
        batches = list(epoch_batches(train_images, config, epoch))
        with _progress(len(batches), f"epoch {epoch}/{config.epochs}", on_terminal) as bar:
            for batch in batches:
                batch = batch.to(device)
                loss, terms = criterion(model(batch), batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + value
                bar.set_postfix(loss=f"{terms['loss']:.4f}")
                bar.update()
        recalibrate_batchnorm(model, calibration_images, device)
        scores = validate(model, val_images, device)
        seconds = time.perf_counter() - started
        improved = scores["val_psnr"] > state["best_psnr"]
        state = {
            "epoch": epoch,
            "best_epoch": epoch if improved else state["best_epoch"],
            "best_psnr": scores["val_psnr"] if improved else state["best_psnr"],
            "train_seconds": state["train_seconds"] + seconds,
            # Where the epochs ran, kept in the checkpoint: a later no-op resume must not relabel it.
            "hardware": hardware_description(device),
            "split": split,
        }
        row = {"epoch": epoch, **{k: v / len(batches) for k, v in sums.items()}, **scores, "seconds": seconds, "best": improved}
        rows.append(row)
        # Log and best weights before the checkpoint: if the run stops in between, the resume
        # redoes this epoch and overwrites both, instead of continuing without its log row.
        write_log(out_dir, rows)
        if improved:
            save_weights(model, out_dir / BEST_NAME, metadata={"task": config.task, "epoch": str(epoch)})
        save_checkpoint(checkpoint, model, optimizer, config, state)
        log(
            f"epoch {epoch}/{config.epochs}: loss {row['loss']:.5f} (mse {row['mse']:.5f}, grad {row['grad']:.5f}, "
            f"perc {row['perc']:.5f}), val PSNR {scores['val_psnr']:.2f} dB, SSIM {scores['val_ssim']:.4f}, "
            f"{seconds:.0f} s{' *' if improved else ''}"
        )

    best_row = next((row for row in rows if row["epoch"] == state["best_epoch"]), {})
    write_json_atomic(
        out_dir / "summary.json",
        {
            "task": config.task,
            "epochs": state["epoch"],
            "best_epoch": state["best_epoch"],
            "val_psnr": best_row.get("val_psnr"),
            "val_ssim": best_row.get("val_ssim"),
            "val_grad": best_row.get("val_grad"),
            "train_seconds": round(state["train_seconds"], 1),
            "hardware": state.get("hardware", hardware_description(device)),
            "torch": torch.__version__,
            "train_cases": split["train_cases"],
            "val_cases": split["val_cases"],
        },
    )
    return out_dir / BEST_NAME


def register_run(run_dir: Path | str, models_folder: Path | str, config_file: str | None = None) -> dict:
    """Copy a run's best weights to ``<models_folder>/<task>.safetensors`` and add them to its manifest."""
    import shutil

    from ..model.weights import register_weights

    run_dir, models_folder = Path(run_dir), Path(models_folder)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    config = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    models_folder.mkdir(parents=True, exist_ok=True)
    target = models_folder / f"{summary['task'].lower()}.safetensors"
    shutil.copyfile(run_dir / BEST_NAME, target)
    provenance = {
        "training_config_file": _relative_to(config_file, models_folder) if config_file else None,
        "training_config": config,
        "data": "Harvard Whole Brain Atlas fusion pairs (../shared/data/harvard)",
        **{key: summary[key] for key in ("train_cases", "val_cases", "best_epoch", "epochs", "val_psnr", "val_ssim", "train_seconds", "hardware", "torch")},
        "date": datetime.date.today().isoformat(),
    }
    return register_weights(summary["task"], target, provenance, folder=models_folder)


def _relative_to(path: str, folder: Path) -> str:
    """``path`` relative to ``folder`` when inside it (the manifest travels with its folder), else as given."""
    try:
        return Path(path).resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return path


# ---------------------------------------------------------------------------
# Command line

_OVERRIDES = {
    # option -> (config field, type)
    "epochs": ("epochs", int),
    "steps_per_epoch": ("steps_per_epoch", int),
    "crop": ("crop_size", int),
    "batch_size": ("batch_size", int),
    "lr": ("lr", float),
    "perceptual": ("perceptual", str),
    "vgg_weights": ("vgg_weights", str),
    "seed": ("seed", int),
    "device": ("device", str),
    "val_images": ("val_images", int),
}


def register_cli(subparsers) -> None:
    """Add ``train`` to an argparse sub-parser collection."""
    import argparse

    parser = subparsers.add_parser(
        "train",
        help="train the EH-DRAN autoencoder for one task (stage 1)",
        description="Stage-1 EH-DRAN training on paired images in <data>/<task>/{MRI,CT|SPECT|PET}; "
        "resumes from <out>/last.safetensors when present.",
    )
    parser.add_argument("--task", choices=list(TASKS), help="task (default: the config's)")
    parser.add_argument("--data", required=True, help="folder holding <task>/MRI and <task>/<OTHER> image folders")
    parser.add_argument("--out", required=True, help="run folder (checkpoints, logs, best weights)")
    parser.add_argument("--config", help="training config JSON (e.g. Resources/Models/configs/mri-ct.json)")
    from .losses import PERCEPTUAL_TERMS

    choices = {"perceptual": PERCEPTUAL_TERMS}
    for option, (field, kind) in _OVERRIDES.items():
        parser.add_argument(
            f"--{option.replace('_', '-')}", dest=option, type=kind, default=None, choices=choices.get(option), help=f"override the config's {field}"
        )
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True, help="continue from <out>/last.safetensors if present (default)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--register-in", metavar="MODELS_DIR", help="afterwards copy the best weights into MODELS_DIR and add them to its manifest.json")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run_cli)


def config_from_args(args) -> TrainConfig:
    values = TrainConfig.load(args.config).to_dict() if args.config else TrainConfig().to_dict()
    if args.task:
        values["task"] = args.task
    elif not args.config:
        raise InputError("give --task or a --config that names one")
    for option, (field, _) in _OVERRIDES.items():
        if getattr(args, option) is not None:
            values[field] = getattr(args, option)
    return TrainConfig.from_dict(values)


def run_cli(args) -> int:
    import torch

    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        config = config_from_args(args)
        best = train(config, args.data, args.out, progress=not args.quiet, resume=args.resume)
        print(f"best weights: {best}")
        if args.register_in:
            entry = register_run(args.out, args.register_in, config_file=args.config)
            print(f"registered {entry['file']} (sha256 {entry['sha256'][:12]}...) in {args.register_in}")
    except (InputError, ValueError) as error:
        print(f"edgefusion train: error: {error}", file=sys.stderr)
        return 2
    return 0
