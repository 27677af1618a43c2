"""Telling CT, SPECT and PET apart from DICOM tags and names (command line and Slicer module)."""

from __future__ import annotations

import re

#: DICOM Modality (0008,0060) codes -> modality.
DICOM_MODALITIES = {"CT": "ct", "NM": "spect", "PT": "pet"}

#: Whole words in a file or node name that identify the modality (tracers included). Ambiguous words
#: ("perfusion" is also an MRI technique, "pt" also means patient) are left out on purpose.
NAME_MODALITY_WORDS = (
    ("spect", ("spect", "nm", "hmpao", "ecd", "tc99m", "datscan", "ioflupane")),
    ("pet", ("pet", "fdg", "amyloid", "fdopa", "psma")),
    ("ct", ("ct", "cta")),
)


def modality_of_dicom_code(code: str | None) -> str | None:
    """'ct', 'spect' or 'pet' for a DICOM Modality code ('CT', 'NM', 'PT'), else None."""
    return DICOM_MODALITIES.get((code or "").strip().upper())


def name_words(name: str) -> list[str]:
    """'CTChest_fdgPET-2' -> ['ct', 'chest', 'fdg', 'pet', '2'] (splits camel case, digits and punctuation)."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)  # fooBar -> foo Bar
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", spaced)  # CTChest -> CT Chest
    return re.findall(r"[a-z]+|[0-9]+", spaced.lower())


def modalities_named(name: str) -> list[str]:
    """Every modality that a word of ``name`` identifies, in the order spect, pet, ct."""
    words = set(name_words(name))
    return [modality for modality, keywords in NAME_MODALITY_WORDS if words.intersection(keywords)]
