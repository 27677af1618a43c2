"""Make the real-scanner sample: the MRI-DIR porcine head CT and T2 MRI, downsampled (CC BY 4.0).

    python scripts/make_mridir_sample.py [--source ../shared/data/mridir]

Reads the two volumes of ``../shared/data/mridir`` (already averaged 2x2x2 / 2x2x1 from the
TCIA series, see its README) and averages them once more with SimpleITK ``BinShrink``, which
keeps each volume's physical placement (origin, direction: the scanners' own, not registered):

* MR T2: 2 x 2 x 1 voxels -> 128 x 128 x 94 at 2 x 2 x 2.5 mm, int16;
* CT:    2 x 2 x 2 voxels -> 128 x 128 x 102 at 1.56 x 1.56 x 2.5 mm, int16 Hounsfield units.

Writes compressed NRRD files, a thumbnail, ``sampledata.json`` (sha256 of each file, licence,
provenance) and ``README.md`` (source, citation, licence, changes) into
``Resources/SampleData/MRIDIR/``. The same input gives byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FOLDER = REPO / "Resources" / "SampleData" / "MRIDIR"
SOURCE = REPO.parent / "shared" / "data" / "mridir"
CATEGORY = "EdgeFusion"
LICENCE = "CC-BY-4.0"
SAMPLE_NAME = "EdgeFusionMRIDIRPorcineMRCT"
# name in ../shared -> (name here, shrink factors x y z, DICOM modality)
FILES = {
    "MRIDIR-porcine-head-MR-T2.nrrd": ("MRIDIR-Porcine-MR-T2.nrrd", (2, 2, 1), "MR"),
    "MRIDIR-porcine-head-CT.nrrd": ("MRIDIR-Porcine-CT.nrrd", (2, 2, 2), "CT"),
}
CITATION = (
    "Ger RB, Yang J, Ding Y, Jacobsen MC, Cardenas CE, Fuller CD, Howell RM, Li H, Stafford RJ, Zhou S, "
    "Court LE. Data from Synthetic and Phantom MR Images for Determining Deformable Image Registration "
    "Accuracy (MRI-DIR). The Cancer Imaging Archive, 2018."
)
PROVENANCE = (
    "Real scanner CT and T2 MRI of one porcine head phantom from the TCIA collection MRI-DIR (" + CITATION + "), "
    "averaged down with SimpleITK BinShrink by scripts/make_mridir_sample.py; origin and direction are the "
    "scanners' own (the pair is not registered). Licence CC BY 4.0."
)
README = f"""# MRI-DIR porcine head: real CT and T2 MRI (sample data, not registered)

| file | modality | voxels | spacing (mm) | values |
|---|---|---|---|---|
| `MRIDIR-Porcine-MR-T2.nrrd` | MR T2 | 128 x 128 x 94 | 2 x 2 x 2.5 | int16, arbitrary units |
| `MRIDIR-Porcine-CT.nrrd` | CT | 128 x 128 x 102 | 1.56 x 1.56 x 2.5 | int16, Hounsfield units |

One porcine head phantom scanned on a CT and on an MRI scanner. The two series have different
DICOM frames of reference and are **not registered**: the CT lies turned by about 180 degrees
about the anterior-posterior axis and some 2 cm away from where the MRI's header puts the head.
EdgeFusion registers it (`edgefusion register`, docs/registration.md) before fusing.

## Source and citation
{CITATION}

## Licence
Creative Commons Attribution 4.0 International (CC BY 4.0),
https://creativecommons.org/licenses/by/4.0/. Users of TCIA data agree not to attempt to identify
any participant (this is an animal-tissue phantom) and to cite the data set as above.

## Changes from the original
The original DICOM series (CT 512 x 512 x 409 at 0.39 x 0.39 x 0.625 mm; MR 512 x 512 x 94 at
0.5 x 0.5 x 2.5 mm) were read as series and averaged 2 x 2 x 2 (CT) and 2 x 2 x 1 (MR) voxels; here
they are averaged once more, 2 x 2 x 2 (CT) and 2 x 2 x 1 (MR), with SimpleITK `BinShrink` (which keeps
the physical placement), and stored as compressed NRRD. Origins and directions are the scanners' own;
no intensity was changed. Made by `scripts/make_mridir_sample.py`.
"""


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_images(source: Path = SOURCE) -> dict:
    """{name here: SimpleITK image} from the shared volumes."""
    import SimpleITK as sitk

    images = {}
    for shared_name, (name, factors, _) in FILES.items():
        path = source / shared_name
        if not path.is_file():
            raise SystemExit(f"make_mridir_sample: {path} not found (the MRI-DIR volumes of ../shared/data/mridir)")
        image = sitk.ReadImage(str(path))
        shrunk = sitk.BinShrink(image, list(factors))
        images[name] = sitk.Cast(shrunk, sitk.sitkInt16)
    return images


def thumbnail(images: dict, path: Path) -> None:
    """Middle slices of the MR and of the CT, each on its own grid (they are not registered)."""
    import SimpleITK as sitk
    from PIL import Image

    panels = []
    for name, (low, high) in (("MRIDIR-Porcine-MR-T2.nrrd", (0, 1200)), ("MRIDIR-Porcine-CT.nrrd", (-300, 400))):
        values = sitk.GetArrayViewFromImage(images[name])
        plane = values[:, values.shape[1] // 2, :][::-1].astype(np.float64)  # coronal, superior up
        picture = Image.fromarray((np.clip((plane - low) / (high - low), 0, 1) * 255).astype(np.uint8))
        panels.append(np.asarray(picture.resize((128, 128), Image.LANCZOS)))
    Image.fromarray(np.concatenate(panels, axis=1)).convert("RGB").save(path, optimize=True)


def write_all(source: Path = SOURCE, folder: Path = FOLDER) -> dict:
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    images = make_images(source)
    files = {}
    for name, factors, modality in FILES.values():
        path = folder / name
        sitk.WriteImage(images[name], str(path), useCompression=True)
        files[name] = {"sha256": sha256_of(path), "modality": modality, "node_name": name.split(".")[0]}
    thumbnail_name = f"{SAMPLE_NAME}.png"
    thumbnail(images, folder / thumbnail_name)
    registry = {"category": CATEGORY, "licence": LICENCE, "provenance": PROVENANCE, "files": files,
                "samples": [{"name": SAMPLE_NAME, "thumbnail": thumbnail_name, "files": list(files)}]}
    (folder / "sampledata.json").write_text(json.dumps(registry, indent=2) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(README, encoding="utf-8")
    return registry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    args = parser.parse_args()
    registry = write_all(args.source)
    for name, entry in registry["files"].items():
        print(f"{entry['sha256']}  {name}  ({(FOLDER / name).stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
