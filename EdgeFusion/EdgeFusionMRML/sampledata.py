"""EdgeFusion's sample data for the SampleData module: a synthetic MRI/CT/SPECT head phantom (CC0)
and a real scanner MR/CT pair, the MRI-DIR porcine head (CC BY 4.0, not registered).

Each folder's files, their sha256 checksums, licence and provenance are listed in its
``sampledata.json``: ``Resources/SampleData/sampledata.json`` (the phantom, written by
``make_phantom.py`` beside it) and ``Resources/SampleData/MRIDIR/sampledata.json`` (written by
``scripts/make_mridir_sample.py``, with the source's citation in its ``README.md``).
The same registry feeds the SampleData module (which checks the checksums when it
"downloads" the files from their ``file://`` location), the self-test and the tests.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import environment

REGISTRY_NAME = "sampledata.json"
#: Folders under the phantom's folder that hold further samples with their own registry and licence.
SUBFOLDERS = ("MRIDIR",)


def sample_data_folder() -> Path:
    return environment.shared_resource_path("SampleData")


def sample_data_folders() -> list[Path]:
    """Every folder with a registry: the phantom's, then ``SUBFOLDERS``."""
    folder = sample_data_folder()
    return [folder] + [folder / name for name in SUBFOLDERS]


def read_registry(folder: Path | None = None) -> dict:
    folder = folder or sample_data_folder()
    return json.loads((folder / REGISTRY_NAME).read_text(encoding="utf-8"))


def sample_data_sources(folder: Path | None = None) -> list[dict]:
    """Keyword arguments for ``SampleData.SampleDataLogic.registerCustomSampleDataSource``, one dict per sample.

    ``folder``: the samples of that folder only; None: of every folder (``sample_data_folders``).
    """
    if folder is None:
        return [source for each in sample_data_folders() for source in sample_data_sources(each)]
    registry = read_registry(folder)
    sources = []
    for sample in registry["samples"]:
        files = [registry["files"][name] for name in sample["files"]]
        sources.append(
            {
                "category": registry["category"],
                "sampleName": sample["name"],
                "thumbnailFileName": str(folder / sample["thumbnail"]),
                "uris": [(folder / name).resolve().as_uri() for name in sample["files"]],
                "fileNames": list(sample["files"]),
                "nodeNames": [entry["node_name"] for entry in files],
                "checksums": [f"SHA256:{entry['sha256']}" for entry in files],
            }
        )
    return sources


def sample_file(node_name: str, folder: Path | None = None) -> Path:
    """Path of a sample file by node name (e.g. 'EdgeFusionPhantom-CT'), after checking its sha256."""
    environment.ensure_library_importable()
    from EdgeFusionLib.demo import sample_path

    for each in [folder] if folder is not None else sample_data_folders():
        for file_name, entry in read_registry(each)["files"].items():
            if entry["node_name"] == node_name:
                return sample_path(file_name, each)
    raise KeyError(f"no sample file for node name {node_name!r}")


def load_sample_volume(node_name: str, volumes_logic, folder: Path | None = None):
    """Load a sample file into the scene of ``volumes_logic`` (a vtkSlicerVolumesLogic) as Slicer does."""
    node = volumes_logic.AddArchetypeVolume(str(sample_file(node_name, folder)), node_name)
    if node is None:
        raise RuntimeError(f"Slicer could not read the sample file for {node_name}")
    return node
