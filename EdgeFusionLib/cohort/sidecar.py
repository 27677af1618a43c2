"""The sidecar JSON beside each cohort output: what made it, and whether a rerun may keep it.

``OUT.nii.gz`` gets ``OUT.nii.gz.json``. Its ``fingerprint`` holds everything that decides the
output's bytes (EdgeFusion version, sha256 of both inputs, modality, fusion options (registration
included), the method actually used, weights sha256, device type); ``output.sha256`` is the output's own.
A rerun keeps an output only when the fingerprint it would record is the one on disk AND the
output still has the recorded sha256; anything else (no sidecar, an edited input, other options
or weights, a truncated or replaced output) is fused again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .. import __version__
from ..devices import device_type
from ..io.files import sha256_of, update_sha256, write_json_atomic
from ..registration import transform_path_for

SIDECAR_SUFFIX = ".json"


def sidecar_path(output: Path | str) -> Path:
    """``a/b.nii.gz`` -> ``a/b.nii.gz.json``."""
    output = Path(output)
    return output.with_name(output.name + SIDECAR_SUFFIX)


def input_sha256(path: Path | str) -> str:
    """sha256 of an input file, or of a DICOM folder: its files sorted by name, each as name, size, bytes."""
    path = Path(path)
    if not path.is_dir():
        return sha256_of(path)
    digest = hashlib.sha256()
    for file in sorted(entry for entry in path.iterdir() if entry.is_file()):
        digest.update(f"{file.name}\0{file.stat().st_size}\0".encode("utf-8"))
        update_sha256(digest, file)
    return digest.hexdigest()


def fingerprint(row, method: str, weights_sha256: str | None, device: str) -> dict:
    """What decides the bytes of ``row``'s output (a :class:`~EdgeFusionLib.cohort.rows.CohortRow`), as JSON values.

    ``method``: the method actually used (the default resolved); ``weights_sha256``: the weights'
    manifest sha256, None for pixel methods; ``device``: where it runs ('cpu', 'cuda:1'), of which the
    type counts (CPU and GPU results differ in the last bits; two GPUs of one type do not).
    """
    values = {
        "edgefusion": __version__,
        "mri_sha256": input_sha256(row.mri),
        "other_sha256": input_sha256(row.other),
        "modality": row.modality,
        "options": row.options.to_json(),
        "method": method,
        "weights_sha256": weights_sha256,
        "device_type": device_type(device),
    }
    return json.loads(json.dumps(values))  # as it reads back from disk (tuples become lists)


def is_up_to_date(output: Path | str, expected: dict) -> bool:
    """True when ``output``'s sidecar records ``expected`` and ``output`` still has the recorded sha256."""
    output = Path(output)
    try:
        record = json.loads(sidecar_path(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("fingerprint") != expected or not output.is_file():
        return False
    recorded = record.get("output")
    return isinstance(recorded, dict) and recorded.get("sha256") == sha256_of(output)


def write_sidecar(output: Path | str, row, expected: dict, device: str, seconds: float, registration=None) -> dict:
    """Write (atomically) and return the sidecar of a finished ``output`` (``registration``: the alignment, if one ran)."""
    output = Path(output)
    record = {
        "fingerprint": expected,
        "inputs": {"mri": str(row.mri), "other": str(row.other)},
        "output": {"path": str(output), "sha256": sha256_of(output)},
        "device": device,
        "seconds": round(seconds, 3),
    }
    if registration is not None:
        record["registration"] = {"summary": registration.summary(), "transform": str(transform_path_for(output)),
                                  **registration.to_json()}
    write_json_atomic(sidecar_path(output), record)
    return record
