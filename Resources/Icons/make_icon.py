"""Draw EdgeFusion's 128 x 128 icon: a head slice, grey MRI on the left, heat-coloured SPECT on the right.

The two halves meet along a bright edge, for the edge-enhanced fusion. Deterministic
(no randomness): ``python Resources/Icons/make_icon.py`` rewrites
``EdgeFusion/Resources/Icons/EdgeFusion.png``, the module icon that the extension
metadata (EXTENSION_ICONURL) also points to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SIZE = 128
SUPERSAMPLING = 4  # drawn at 4x and averaged down, for smooth edges
OUTPUT = Path(__file__).resolve().parents[2] / "EdgeFusion" / "Resources" / "Icons" / "EdgeFusion.png"


def heat(t: np.ndarray) -> np.ndarray:
    """Black-red-yellow-white colour map, t in [0, 1] -> RGB in [0, 1]."""
    return np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], axis=-1)


def draw() -> np.ndarray:
    """RGBA uint8 image of shape (SIZE, SIZE, 4)."""
    n = SIZE * SUPERSAMPLING
    y, x = (np.mgrid[0:n, 0:n] + 0.5) / n * 2 - 1  # [-1, 1], y down
    head = (x / 0.80) ** 2 + ((y + 0.02) / 0.92) ** 2
    brain = (x / 0.66) ** 2 + ((y + 0.02) / 0.78) ** 2
    skull = (head < 1) & (brain >= 1.08)
    # White matter inside a folded (gyri-like) boundary, grey matter around it, two ventricles.
    angle = np.arctan2(y, x)
    white = brain < (0.60 + 0.05 * np.cos(13 * angle) + 0.03 * np.cos(7 * angle + 1.0)) ** 2
    ventricles = ((np.abs(x) - 0.13) / 0.06) ** 2 + ((y + 0.05) / 0.25) ** 2 < 1
    grey = np.where(brain < 1.08, 0.5, 0.0)
    grey = np.where(white, 0.78, grey)
    grey = np.where(ventricles, 0.2, grey)
    grey = np.where(skull, 0.95, grey)
    # Perfusion: high in grey matter, lower in white matter, a hot lesion on the right.
    uptake = np.where(brain < 1.08, 0.55, 0.0)
    uptake = np.where(white, 0.3, uptake)
    uptake = np.where(ventricles, 0.1, uptake)
    uptake = uptake + 0.45 * np.exp(-((x - 0.32) ** 2 + (y + 0.28) ** 2) / 0.02)
    rgb = np.where((x < 0)[..., None], np.repeat(grey[..., None], 3, axis=-1), heat(np.clip(uptake, 0, 1)))
    rgb = np.where(skull[..., None] & (x >= 0)[..., None], 0.95, rgb)
    # The fusion edge: a bright vertical seam inside the head.
    seam = (np.abs(x) < 0.025) & (head < 1)
    rgb = np.where(seam[..., None], np.array([0.55, 0.9, 1.0]), rgb)
    # Rounded dark tile behind the head.
    corner = 0.28
    qx, qy = np.maximum(np.abs(x) - (1 - corner), 0), np.maximum(np.abs(y) - (1 - corner), 0)
    tile = qx**2 + qy**2 < corner**2
    background = np.array([0.11, 0.15, 0.22])
    rgb = np.where((head < 1)[..., None], rgb, background)
    rgba = np.concatenate([rgb, tile[..., None].astype(np.float64)], axis=-1)
    rgba = rgba.reshape(SIZE, SUPERSAMPLING, SIZE, SUPERSAMPLING, 4).mean(axis=(1, 3))
    return np.round(rgba * 255).astype(np.uint8)


if __name__ == "__main__":
    from PIL import Image

    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw(), mode="RGBA").save(OUTPUT, optimize=True)
    print(f"wrote {OUTPUT}")
