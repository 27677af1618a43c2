"""Reading and checking a cohort file: one CSV row per pair to fuse, every row checked before any work.

The file is UTF-8 CSV (comma-separated, a byte-order mark is allowed) with a header naming its
columns, in any order:

=========  ========  ======================================================================
column     required  value
=========  ========  ======================================================================
mri        yes       the MRI: a NIfTI, NRRD, MHA/MHD file, a DICOM series folder, or a 2D picture
other      yes       the CT, SPECT or PET of the same patient, same formats
modality   yes       ct, spect or pet (the modality of ``other``)
output     no        the fused file (.nii.gz, .nii, .nrrd, .mha, .png, .tif); default below
method     no        a fusion method (``edgefusion info``); default: ``--method``, else the task's default
register   no        auto, none, rigid or affine (as ``fuse --register``); default: the command's ``--register``
=========  ========  ======================================================================

Paths in ``mri`` and ``other`` are relative to the CSV's folder; a relative ``output`` is relative
to ``--out-dir`` (so one cohort file serves several output folders, e.g. one per method). The
default output mirrors the MRI's place under the CSV's folder: ``sub-01/T1w.nii.gz`` becomes
``OUT_DIR/sub-01/T1w_fused.nii.gz`` (``.png`` for a 2D picture; a DICOM folder's name is kept whole);
an MRI outside the CSV's folder gives ``OUT_DIR/<its name>_fused.nii.gz``.

What stops everything (:class:`~EdgeFusionLib.errors.InputError`, nothing is done): a cohort file
that cannot be read as such (missing, not UTF-8, no header, a required column missing, an unknown
or repeated column name, no rows). What only rejects a row (:class:`RowProblem`, the others go on):
a missing input, an empty or unknown modality, method or register value, an output format that
cannot be written, an output that is an input of any row, two rows writing the same file, a row
with more or fewer fields than the header.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections import defaultdict
from pathlib import Path

from ..errors import InputError
from ..fusion.options import FusionOptions
from ..io.images import TWO_D_SUFFIXES, WRITE_SUFFIXES, check_output_folder, full_suffix
from ..modality import check_modality
from .sidecar import sidecar_path

REQUIRED_COLUMNS = ("mri", "other", "modality")
OPTIONAL_COLUMNS = ("output", "method", "register")

#: Appended to the MRI's stem for the default output name.
DEFAULT_OUTPUT_TAG = "_fused"


@dataclasses.dataclass(frozen=True)
class CohortRow:
    """One checked pair. Paths are absolute; ``line`` is the row's line in the CSV (the header is line 1)."""

    line: int
    mri: Path
    other: Path
    modality: str
    output: Path
    options: FusionOptions  # registration included (the row's register column)

    def to_json(self) -> dict:
        """What a worker needs, as plain JSON values (:meth:`from_json` gives the row back)."""
        return {"line": self.line, "mri": str(self.mri), "other": str(self.other), "modality": self.modality,
                "output": str(self.output), "options": self.options.to_json()}

    @classmethod
    def from_json(cls, values: dict) -> CohortRow:
        return cls(line=values["line"], mri=Path(values["mri"]), other=Path(values["other"]),
                   modality=values["modality"], output=Path(values["output"]),
                   options=FusionOptions.from_json(values["options"]))


@dataclasses.dataclass(frozen=True)
class RowProblem:
    """A row that will not be fused, with the reason (one line) and the row's values as written."""

    line: int
    values: dict[str, str]
    reason: str


@dataclasses.dataclass(frozen=True)
class Cohort:
    """A checked cohort file: the rows to fuse and the rows rejected, both in file order."""

    csv_path: Path
    out_dir: Path
    rows: list[CohortRow]
    problems: list[RowProblem]

    @property
    def size(self) -> int:
        return len(self.rows) + len(self.problems)


def read_cohort(csv_path: Path | str, out_dir: Path | str, defaults: FusionOptions = FusionOptions(),
                check_device: bool = True) -> Cohort:
    """Read and check ``csv_path``; rows get ``defaults`` (their own ``method`` column wins).

    ``check_device`` False: the device is checked by name only, for pairs fused on other
    machines (cluster workers). Reads no image; raises InputError only for a file that cannot be
    used at all (see the module's docstring).
    """
    csv_path, out_dir = Path(csv_path), Path(out_dir)
    header, records = _read_records(csv_path)
    base = Path(os.path.abspath(csv_path.parent))
    rows, problems = [], []
    for line, values in records:
        try:
            if len(values) != len(header):
                raise InputError(f"has {len(values)} fields but the header has {len(header)}")
            rows.append(_parse_row(line, dict(zip(header, values)), base, Path(os.path.abspath(out_dir)), defaults,
                                   check_device))
        except InputError as error:
            problems.append(RowProblem(line, dict(zip(header, values)), str(error)))
    rows, clashes = _without_clashes(rows)
    problems = sorted(problems + clashes, key=lambda problem: problem.line)
    return Cohort(csv_path, out_dir, rows, problems)


def _read_records(csv_path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(column names, [(line, fields)]) of a CSV; blank lines are left out."""
    if not csv_path.is_file():
        raise InputError(f"cohort file not found: {csv_path}")
    try:
        with open(csv_path, encoding="utf-8-sig", newline="") as stream:
            reader = csv.reader(stream)
            header = [name.strip().lower() for name in next(reader, [])]
            records = []
            for fields in reader:
                if any(field.strip() for field in fields):
                    records.append((reader.line_num, [field.strip() for field in fields]))
    except UnicodeDecodeError:
        raise InputError(f"cohort file {csv_path} is not UTF-8 text") from None
    except csv.Error as error:
        raise InputError(f"cohort file {csv_path} is not valid CSV: {error}") from None
    _check_header(csv_path, header)
    if not records:
        raise InputError(f"cohort file {csv_path} has a header but no rows")
    return header, records


def _check_header(csv_path: Path, header: list[str]) -> None:
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        hint = " (is it comma-separated?)" if len(header) == 1 else ""
        raise InputError(f"cohort file {csv_path} lacks the column(s) {', '.join(missing)}{hint}; its header must name "
                         f"{', '.join(REQUIRED_COLUMNS)} and may name {', '.join(OPTIONAL_COLUMNS)}")
    unknown = [name for name in header if name not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise InputError(f"cohort file {csv_path} has unknown column(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise InputError(f"cohort file {csv_path} names the column(s) {', '.join(repeated)} more than once")


def _parse_row(line: int, values: dict[str, str], base: Path, out_dir: Path, defaults: FusionOptions,
               check_device: bool) -> CohortRow:
    """One row, checked without reading an image; raises InputError naming the problem."""
    inputs = {}
    for column in ("mri", "other"):
        if not values[column]:
            raise InputError(f"the {column} column is empty")
        inputs[column] = Path(os.path.abspath(base / values[column]))
        if not inputs[column].exists():
            raise InputError(f"{column} not found: {inputs[column]}")
    if not values["modality"]:
        raise InputError("the modality column is empty; write ct, spect or pet")
    modality = check_modality(values["modality"]).name
    options = dataclasses.replace(defaults, method=values.get("method") or defaults.method,
                                  registration=(values.get("register") or defaults.registration).lower())
    # A device named for cluster workers may not exist on this machine: check everything else here.
    (options if check_device else dataclasses.replace(options, device="cpu")).check(modality)
    output = out_dir / values["output"] if values.get("output") else default_output(inputs["mri"], base, out_dir)
    output = Path(os.path.abspath(output))
    if full_suffix(output) not in WRITE_SUFFIXES:
        raise InputError(f"cannot write {output}: use one of {', '.join(WRITE_SUFFIXES)}")
    if output.is_dir():
        raise InputError(f"output path is a folder: {output}")
    check_output_folder(output.parent)
    return CohortRow(line, inputs["mri"], inputs["other"], modality, output, options)


def default_output(mri: Path, base: Path, out_dir: Path) -> Path:
    """``out_dir`` / the MRI's folder under ``base`` (if it lies there) / ``<stem>_fused<.nii.gz|.png>``."""
    suffix = "" if mri.is_dir() else full_suffix(mri)
    stem = mri.name[:len(mri.name) - len(suffix)] if suffix else mri.name
    extension = ".png" if suffix in TWO_D_SUFFIXES else ".nii.gz"
    relative = Path(os.path.relpath(mri.parent, base))
    folder = out_dir if relative.parts[:1] == ("..",) else out_dir / relative
    return folder / f"{stem}{DEFAULT_OUTPUT_TAG}{extension}"


def _without_clashes(rows: list[CohortRow]) -> tuple[list[CohortRow], list[RowProblem]]:
    """Rows whose output (or its sidecar) is another row's output, or any row's input, are rejected: all of them,
    since nothing says which one was meant."""
    writers: dict[str, list[CohortRow]] = defaultdict(list)
    for row in rows:
        for written in (row.output, sidecar_path(row.output)):
            writers[os.path.realpath(written)].append(row)
    inputs = {os.path.realpath(path): (row, role)
              for row in rows for role, path in (("MRI", row.mri), ("other", row.other))}
    reasons: dict[int, str] = {}
    for path, writing in writers.items():
        if path in inputs:
            row, role = inputs[path]
            for writer in writing:
                reasons.setdefault(writer.line, f"its output {path} is the {role} input of row {row.line}")
        if len(writing) > 1:
            lines = sorted({writer.line for writer in writing})
            for writer in writing:
                others = ", ".join(str(line) for line in lines if line != writer.line)
                reasons.setdefault(writer.line, f"rows {writer.line} and {others} write the same file {path}; "
                                                "give them different outputs")
    kept = [row for row in rows if row.line not in reasons]
    problems = [RowProblem(row.line, _written_values(row), reasons[row.line]) for row in rows if row.line in reasons]
    return kept, problems


def _written_values(row: CohortRow) -> dict[str, str]:
    return {"mri": str(row.mri), "other": str(row.other), "modality": row.modality, "output": str(row.output)}
