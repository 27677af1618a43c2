"""The paired-image folder layout used by training, ``batch`` and ``evaluate``.

A task folder holds two sub-folders with same-named images, one pair per name::

    <root>/MRI-CT/MRI/16010.png   <root>/MRI-CT/CT/16010.png

(the layout of ``../shared/data/harvard``). A name's first two characters are the
atlas case; slices of one case come from one patient, so data is always split by
case, never by slice.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..modality import check_task

#: Validation cases of the development data (``../shared/data/harvard``), drawn once
#: with numpy's default_rng(3407), a quarter of each task's cases (at least one).
#: Training never sees them; model selection, rule design and docs/results.md use them.
VALIDATION_CASES: dict[str, tuple[str, ...]] = {
    "MRI-CT": ("16", "32"),
    "MRI-SPECT": ("21", "25", "30"),
    "MRI-PET": ("25",),
}

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclasses.dataclass(frozen=True)
class Pair:
    """One registered image pair: the MRI and the other modality of the same slice."""

    name: str
    mri_path: Path
    other_path: Path

    @property
    def case(self) -> str:
        return case_of(self.name)


def case_of(name: str) -> str:
    """Atlas case of an image name: its first two characters ('28010' -> '28')."""
    return name[:2]


def find_pairs(mri_dir: Path | str, other_dir: Path | str) -> list[Pair]:
    """Pairs of same-named images (by file stem) in two folders, sorted by name.

    Raises InputError when a folder is missing or when no names match; names present
    in only one folder are ignored (``unmatched_names`` lists them).
    """
    mri_dir, other_dir = Path(mri_dir), Path(other_dir)
    for folder in (mri_dir, other_dir):
        if not folder.is_dir():
            raise InputError(f"folder not found: {folder}")
    mri = _images_by_stem(mri_dir)
    other = _images_by_stem(other_dir)
    names = sorted(set(mri) & set(other))
    if not names:
        raise InputError(f"no same-named images in {mri_dir} and {other_dir}")
    return [Pair(name, mri[name], other[name]) for name in names]


def unmatched_names(mri_dir: Path | str, other_dir: Path | str) -> list[str]:
    """Image names present in only one of the two folders."""
    mri = _images_by_stem(Path(mri_dir))
    other = _images_by_stem(Path(other_dir))
    return sorted(set(mri) ^ set(other))


def task_pairs(root: Path | str, task: str) -> list[Pair]:
    """All pairs of ``task`` under ``root/<task>/{MRI,<OTHER>}`` (OTHER: the modality's label, e.g. CT)."""
    folder = Path(root) / task
    return find_pairs(folder / "MRI", folder / check_task(task).label)


def read_grey01(path: Path | str) -> tuple[np.ndarray, np.ndarray | None]:
    """(grey float32 in [0, 1], RGB float32 in [0, 1] or None) of an 8- or 16-bit image file.

    A colour image's grey is its BT.601 luma Y (``colour.luma``), as the fusion uses.
    """
    from PIL import Image

    from ..fusion.colour import luma

    with Image.open(path) as image:
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey (Pillow reads some as "I")
            grey = np.asarray(image, dtype=np.float32) / 65535.0
            if grey.min() < 0 or grey.max() > 1:
                raise InputError(f"{path}: values outside the 16-bit range")
            return grey, None
        if image.mode in ("1", "L"):
            return np.asarray(image.convert("L"), dtype=np.float32) / 255.0, None
        if image.mode in ("P", "PA", "LA", "RGB", "RGBA", "CMYK", "YCbCr"):
            rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
            return np.clip(luma(rgb), 0.0, 1.0), rgb
    raise InputError(f"{path}: unsupported image mode {image.mode!r}; use 8- or 16-bit grey or RGB")


def split_by_case(pairs: list[Pair], validation_cases: tuple[str, ...] | list[str]) -> tuple[list[Pair], list[Pair]]:
    """(training pairs, validation pairs): every slice of a validation case goes to validation."""
    validation_cases = set(validation_cases)
    train = [p for p in pairs if p.case not in validation_cases]
    val = [p for p in pairs if p.case in validation_cases]
    return train, val


def _images_by_stem(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}
