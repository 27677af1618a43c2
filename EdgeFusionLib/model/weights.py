"""Bundled EH-DRAN weights: a manifest, safetensors files, sha256 checks.

``Resources/Models/manifest.json`` maps each task to its weights file, the file's
sha256 and where it came from (training config, data, date). Weights are loaded
with safetensors (no pickle) and only after the sha256 matches.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .. import RESOURCES_DIR
from ..errors import InputError, MissingWeightsError
from ..io.files import atomic_path, sha256_of, write_json_atomic
from ..modality import check_task

#: Overrides the models folder (e.g. a user's own trained weights with their own manifest).
MODELS_DIR_ENV = "EDGEFUSION_MODELS_DIR"
MANIFEST_NAME = "manifest.json"


def models_dir() -> Path:
    """Folder holding ``manifest.json`` and the weights files."""
    override = os.environ.get(MODELS_DIR_ENV)
    if override:
        return Path(override)
    # Source tree and Slicer install: EdgeFusionLib/ sits beside Resources/.
    return RESOURCES_DIR / "Models"


def read_manifest(folder: Path | None = None) -> dict:
    """The manifest as a dict ``{"models": {task: {"file", "sha256", ...}}}`` (empty if absent)."""
    path = (folder or models_dir()) / MANIFEST_NAME
    if not path.is_file():
        return {"models": {}}
    try:
        with open(path, encoding="utf-8") as stream:
            manifest = json.load(stream)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read the weights manifest {path}: {error}") from None
    models = manifest.get("models") if isinstance(manifest, dict) else None
    if not isinstance(models, dict) or not all(
            isinstance(entry, dict) and isinstance(entry.get("file"), str) and isinstance(entry.get("sha256"), str)
            for entry in models.values()):
        raise InputError(f"the weights manifest {path} is malformed: every task needs a \"file\" and a \"sha256\"")
    return manifest


def available_tasks(folder: Path | None = None) -> dict[str, dict]:
    """Tasks with a weights entry whose file exists: task -> manifest entry."""
    folder = folder or models_dir()
    entries = read_manifest(folder)["models"]
    return {task: entry for task, entry in entries.items() if (folder / entry["file"]).is_file()}


def load_state_dict(path: Path | str, expected_sha256: str | None = None) -> dict:
    """Tensors of a safetensors file, after checking its sha256 when one is given."""
    from safetensors.torch import load_file

    path = Path(path)
    if expected_sha256 is not None:
        actual = sha256_of(path)
        if actual != expected_sha256:
            raise InputError(f"weights file {path} is corrupt or was replaced: sha256 {actual} != manifest {expected_sha256}")
    return load_file(str(path))


def load_model(task: str, device: str = "cpu", folder: Path | None = None):
    """The trained EH-DRAN for ``task`` in eval mode, from the manifest (sha256-checked)."""
    import torch

    from .network import EHDRAN

    check_task(task)
    folder = folder or models_dir()
    entry = read_manifest(folder)["models"].get(task)
    if entry is None or not (folder / entry["file"]).is_file():
        raise MissingWeightsError(f"no weights for task {task} in {folder}")
    model = EHDRAN()
    model.load_state_dict(load_state_dict(folder / entry["file"], entry["sha256"]))
    return model.to(torch.device(device)).eval()


def save_weights(model, path: Path | str, metadata: dict[str, str] | None = None) -> str:
    """Write a model's state dict as safetensors (atomically); returns the file's sha256."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(path) as temporary:
        save_file(tensors, str(temporary), metadata=metadata)
    return sha256_of(path)


def register_weights(task: str, path: Path | str, provenance: dict, folder: Path | None = None) -> dict:
    """Add or replace ``task``'s entry in the manifest of ``folder`` (default: the bundled one)."""
    check_task(task)
    folder = folder or models_dir()
    path = Path(path)
    if path.parent.resolve() != folder.resolve():
        raise InputError(f"weights file {path} must be inside the models folder {folder}")
    manifest = read_manifest(folder)
    entry = {"file": path.name, "sha256": sha256_of(path), "bytes": path.stat().st_size, **provenance}
    manifest["models"][task] = entry
    write_json_atomic(folder / MANIFEST_NAME, manifest)
    return entry
