"""Shared fixtures: small seeded models and synthetic images (never the atlas images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
HARVARD = REPO.parent / "shared" / "data" / "harvard"


def make_random_model(seed: int = 0):
    """An EH-DRAN with random weights AND non-trivial BatchNorm statistics / Sobel kernels,
    so that tests exercise every folded parameter. Test-only: never used by the product."""
    import torch

    from EdgeFusionLib.model.network import EHDRAN

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = EHDRAN()
    with torch.no_grad():
        norm = model.encoder.shared_norm
        norm.running_mean.uniform_(-0.3, 0.3, generator=generator)
        norm.running_var.uniform_(0.5, 2.0, generator=generator)
        norm.weight.uniform_(0.5, 1.5, generator=generator)
        norm.bias.uniform_(-0.2, 0.2, generator=generator)
        for kernel in model.encoder.drgo.gradient.parameters():
            kernel.add_(0.1 * torch.randn(kernel.shape, generator=generator))
    return model.eval()


@pytest.fixture(scope="session")
def random_model():
    return make_random_model()


def phantom_slice(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth brain-like test image in [0, 1]: an ellipse with inner structures and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    cy, cx = (height - 1) / 2, (width - 1) / 2
    r = ((y - cy) / (0.42 * height)) ** 2 + ((x - cx) / (0.36 * width)) ** 2
    image = np.where(r < 1, 0.5, 0.0) + np.where(r < 0.3, 0.3 * np.cos(x / 3.0) ** 2, 0.0)
    return np.clip(image + 0.03 * rng.standard_normal((height, width)), 0, 1).astype(np.float32)


@pytest.fixture
def models_dir_empty(tmp_path, monkeypatch):
    """Point the weights lookup to an empty folder (no trained weights)."""
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("EDGEFUSION_MODELS_DIR", str(folder))
    return folder
