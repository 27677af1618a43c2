"""The modalities EdgeFusion fuses with an MRI: one table that everything else derives from.

Each entry says how a modality is named (``name`` in code and on the command line, ``label``
for people and atlas folders), which trained model fuses it (``task``), how DICOM and file or
node names identify it, and whether viewers show it through a colour table (SPECT, PET), in
which case it is fused as colour. Command line choices, the Slicer panel, the worker, training,
evaluation and the atlas layout all read this table; none of them spells a modality out.
"""

from __future__ import annotations

import dataclasses
import re

from .errors import InputError


@dataclasses.dataclass(frozen=True)
class Modality:
    """The other image of a pair (the first is always the MRI)."""

    name: str  #: 'ct', 'spect', 'pet': the spelling of code, files and the command line
    label: str  #: 'CT', 'SPECT', 'PET': shown to people; also the atlas folder of the other images
    dicom_codes: tuple[str, ...]  #: DICOM Modality (0008,0060) values of such a series
    #: Whole words in a file or node name that identify the modality (tracers included). Ambiguous
    #: words ("perfusion" is also an MRI technique, "pt" also means patient) are left out on purpose.
    name_words: tuple[str, ...]
    shown_in_colour: bool  #: viewers show it through a colour table, and it is fused as colour

    @property
    def task(self) -> str:
        """The trained model that fuses it with an MRI: 'MRI-CT', 'MRI-SPECT', 'MRI-PET'."""
        return f"MRI-{self.label}"


#: Every modality, in the order they are offered (command line choices, the panel's selector).
MODALITIES: dict[str, Modality] = {
    modality.name: modality
    for modality in (
        Modality("ct", "CT", ("CT",), ("ct", "cta"), shown_in_colour=False),
        Modality("spect", "SPECT", ("NM",), ("spect", "nm", "hmpao", "ecd", "tc99m", "datscan", "ioflupane"),
                 shown_in_colour=True),
        Modality("pet", "PET", ("PT",), ("pet", "fdg", "amyloid", "fdopa", "psma"), shown_in_colour=True),
    )
}

#: task -> modality ('MRI-CT' -> the CT entry).
TASKS: dict[str, Modality] = {modality.task: modality for modality in MODALITIES.values()}

#: The DICOM Modality of an MRI series.
MRI_DICOM_CODE = "MR"


def check_modality(name: str) -> Modality:
    """The table entry for 'ct', 'spect' or 'pet' (any case, surrounding spaces ignored)."""
    key = (name or "").strip().lower()
    if key not in MODALITIES:
        raise InputError(f"unknown modality {name!r}; choose one of {', '.join(MODALITIES)}")
    return MODALITIES[key]


def check_task(task: str) -> Modality:
    """The modality fused by ``task`` ('MRI-CT', 'MRI-SPECT', 'MRI-PET')."""
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return TASKS[task]


def modality_of_dicom_code(code: str | None) -> Modality | None:
    """The modality of a DICOM Modality code ('CT', 'NM', 'PT'); None for others ('MR', '', None)."""
    code = (code or "").strip().upper()
    return next((modality for modality in MODALITIES.values() if code in modality.dicom_codes), None)


def name_words(name: str) -> list[str]:
    """'CTChest_fdgPET-2' -> ['ct', 'chest', 'fdg', 'pet', '2'] (splits camel case, digits and punctuation)."""
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)  # fooBar -> foo Bar
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", spaced)  # CTChest -> CT Chest
    return re.findall(r"[a-z]+|[0-9]+", spaced.lower())


def modalities_named(name: str) -> list[Modality]:
    """Every modality that a word of ``name`` identifies, in table order."""
    words = set(name_words(name))
    return [modality for modality in MODALITIES.values() if words.intersection(modality.name_words)]


@dataclasses.dataclass(frozen=True)
class ModalityGuess:
    """What the DICOM tag and the name of an image say about its modality.

    ``modality`` is None when they say nothing or contradict each other; ``reason`` says,
    in a clause, where the answer came from or why there is none.
    """

    modality: Modality | None
    reason: str


def guess_modality(dicom_code: str | None, name: str) -> ModalityGuess:
    """The modality from the DICOM Modality tag, else from the words of a file or node name.

    One behaviour for every front end: a tag wins; a name must point to exactly one modality
    (a name that points to two, e.g. 'spect_pet_compare', gives no guess); anything else gives none.
    """
    tagged = modality_of_dicom_code(dicom_code)
    if tagged is not None:
        return ModalityGuess(tagged, f"its DICOM Modality is {dicom_code.strip().upper()}")
    named = modalities_named(name)
    if len(named) == 1:
        return ModalityGuess(named[0], f"its name {name!r} says {named[0].label}")
    if named:
        labels = " and ".join(modality.label for modality in named)
        return ModalityGuess(None, f"its name {name!r} points to {labels}")
    return ModalityGuess(None, f"neither a DICOM Modality tag nor its name {name!r} says CT, SPECT or PET")
