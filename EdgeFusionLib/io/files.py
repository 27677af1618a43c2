"""Writing files so that nobody ever sees half of one: every output of EdgeFusion goes through here."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` when the block ends.

    The temporary file keeps the name's suffixes (``.nii.gz``, ``.png``), so writers that pick the
    format from the name work. If the block raises (or is interrupted), the temporary file is
    removed and ``path`` is left as it was. The result gets a normal file's mode (from the umask).
    """
    path = Path(path)
    suffix = f".partial{_kept_suffix(path)}"
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    temporary = Path(temporary)
    try:
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private (0600)
        yield temporary
        os.replace(temporary, path)  # same folder: the rename is atomic
    finally:
        temporary.unlink(missing_ok=True)


def partial_files_of(path: Path | str) -> list[Path]:
    """Temporary files that :func:`atomic_path` left beside ``path`` (a process killed while writing).

    Only a process that is not writing ``path`` itself may remove them: a cohort worker before it
    writes an output whose previous attempt died, the cohort client when no pair is running.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    # '*' is mkstemp's random part; the kept suffix tells an image's leftovers from its sidecar's.
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.partial{glob.escape(_kept_suffix(path))}"))


def _kept_suffix(path: Path) -> str:
    return "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix


def update_sha256(digest, path: Path | str) -> None:
    """Feed a file's bytes into a hashlib digest, 1 MiB at a time (memory stays bounded)."""
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)


def sha256_of(path: Path | str) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    update_sha256(digest, path)
    return digest.hexdigest()


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)


def write_json_atomic(path: Path | str, values) -> None:
    """``values`` as indented JSON with sorted keys and a final newline."""
    write_bytes_atomic(path, (json.dumps(values, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask
