"""Which of the module's Python requirements are missing (checked without importing them).

Installing is left to the GUI, which asks the user first (``EdgeFusion.py``):
torch through the PyTorch extension, the rest with ``pip``.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path


def read_requirements(path: str | Path) -> list[str]:
    """Requirement strings of a requirements.txt file (comments and blank lines dropped)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def missing_requirements(requirements: list[str]) -> list[str]:
    """The requirements whose distribution is not installed, or installed in a version outside the specifier."""
    from packaging.requirements import Requirement  # bundled with Slicer and with pip

    missing = []
    for text in requirements:
        requirement = Requirement(text)
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            missing.append(text)
    return missing
