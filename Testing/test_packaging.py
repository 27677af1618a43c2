"""The Slicer extension's packaging: CMake lists, extension metadata, index entry, icon, UI bindings.

These checks read files only (no Slicer needed); they catch what would otherwise
only show up on the Slicer extensions build machines or in a user's installation.
"""

from __future__ import annotations

import ast
import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODULE_DIR = REPO / "EdgeFusion"
MODULE_CMAKE = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
TOP_CMAKE = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
MODULE_SOURCE = (MODULE_DIR / "EdgeFusion.py").read_text(encoding="utf-8")
INDEX_ENTRY = json.loads((REPO / "EdgeFusion.json").read_text(encoding="utf-8"))

#: Keys allowed by slicer-extension-catalog-entry-schema-v1.0.2.json (additionalProperties: false).
INDEX_SCHEMA_KEYS = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
                     "dicom_support_rule", "build_subdirectory", "enabled", "tier"}
INDEX_REQUIRED_KEYS = {"$schema", "category", "scm_url"}


def cmake_list(text: str, variable: str) -> list[str]:
    """Items of ``set(VARIABLE item item ...)`` in a CMakeLists.txt, with ${MODULE_NAME} expanded."""
    match = re.search(rf"set\({variable}\s(.*?)\)", text, re.DOTALL)
    assert match, f"set({variable} ...) not found"
    items = [line.split("#")[0].strip() for line in match.group(1).splitlines()]
    return [item.replace("${MODULE_NAME}", "EdgeFusion") for item in items if item]


def cmake_value(variable: str) -> str:
    match = re.search(rf'set\({variable}\s+"([^"]*)"\)', TOP_CMAKE)
    assert match, f"{variable} is not set in the top-level CMakeLists.txt"
    return match.group(1)


# ---------------------------------------------------------------- installed files


def test_every_edgefusionlib_python_file_is_installed():
    listed = set(cmake_list(MODULE_CMAKE, "EDGEFUSIONLIB_PYTHON_SCRIPTS"))
    present = {path.relative_to(REPO).as_posix() for path in (REPO / "EdgeFusionLib").rglob("*.py")}
    assert present - listed == set(), "add these to EDGEFUSIONLIB_PYTHON_SCRIPTS in EdgeFusion/CMakeLists.txt"
    assert listed - present == set(), "these are listed in EdgeFusion/CMakeLists.txt but do not exist"


def test_every_module_python_file_is_installed():
    listed = set(cmake_list(MODULE_CMAKE, "MODULE_PYTHON_SCRIPTS"))
    present = {path.relative_to(MODULE_DIR).as_posix() for path in MODULE_DIR.rglob("*.py")}
    assert present == listed


def test_only_the_module_itself_is_a_python_file_in_the_module_folder():
    """Slicer tries to load every .py file in a module folder as a module; helpers live in EdgeFusionMRML/."""
    assert sorted(path.name for path in MODULE_DIR.glob("*.py")) == ["EdgeFusion.py"]


def test_listed_resources_exist():
    for resource in cmake_list(MODULE_CMAKE, "MODULE_PYTHON_RESOURCES"):
        assert (MODULE_DIR / resource).is_file(), resource
    for resource in cmake_list(MODULE_CMAKE, "EDGEFUSION_SHARED_RESOURCES"):
        if not resource.startswith("${"):
            assert (REPO / resource).is_file(), resource


def test_sample_data_files_are_all_installed():
    registry = json.loads((REPO / "Resources" / "SampleData" / "sampledata.json").read_text(encoding="utf-8"))
    listed = set(cmake_list(MODULE_CMAKE, "EDGEFUSION_SHARED_RESOURCES"))
    needed = {"Resources/SampleData/sampledata.json"}
    needed |= {f"Resources/SampleData/{name}" for name in registry["files"]}
    needed |= {f"Resources/SampleData/{sample['thumbnail']}" for sample in registry["samples"]}
    assert needed - listed == set()


def test_weights_named_in_the_manifest_are_installed():
    """The weights are globbed (*.json, *.safetensors in Resources/Models); the manifest must fit that."""
    assert "Resources/Models/*.json" in MODULE_CMAKE and "Resources/Models/*.safetensors" in MODULE_CMAKE
    manifest = REPO / "Resources" / "Models" / "manifest.json"
    if not manifest.exists():
        pytest.skip("no weights bundled yet (Resources/Models/manifest.json is absent)")
    for task, entry in json.loads(manifest.read_text(encoding="utf-8"))["models"].items():
        assert "/" not in entry["file"] and entry["file"].endswith(".safetensors"), task


# ---------------------------------------------------------------- extension metadata


def test_top_level_cmake_has_the_extension_metadata():
    assert re.search(r"^project\(EdgeFusion\)", TOP_CMAKE, re.MULTILINE)
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                     "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert cmake_value(variable).strip(), variable
    assert cmake_value("EXTENSION_DEPENDS") == "PyTorch"
    assert "add_subdirectory(EdgeFusion)" in TOP_CMAKE
    assert "include(${Slicer_EXTENSION_GENERATE_CONFIG})" in TOP_CMAKE and "include(${Slicer_EXTENSION_CPACK})" in TOP_CMAKE


def test_urls_all_point_to_the_same_repository():
    homepage = cmake_value("EXTENSION_HOMEPAGE")
    owner_and_name = homepage.removeprefix("https://github.com/")
    assert INDEX_ENTRY["scm_url"].removesuffix(".git") == homepage
    raw = f"https://raw.githubusercontent.com/{owner_and_name}/{INDEX_ENTRY['scm_revision']}/"
    icon_url = cmake_value("EXTENSION_ICONURL")
    assert icon_url.startswith(raw)
    assert (REPO / icon_url.removeprefix(raw)).is_file(), "the icon URL must point to a file of the repository"
    assert cmake_value("EXTENSION_SCREENSHOTURLS").startswith(raw)


def test_extensions_index_entry_follows_the_schema():
    assert INDEX_REQUIRED_KEYS <= set(INDEX_ENTRY) <= INDEX_SCHEMA_KEYS
    assert INDEX_ENTRY["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.2.json#")
    assert INDEX_ENTRY["category"] == cmake_value("EXTENSION_CATEGORY")
    assert INDEX_ENTRY["build_dependencies"] == ["PyTorch"]
    assert 1 <= INDEX_ENTRY["tier"] <= 5
    assert INDEX_ENTRY["scm_url"].startswith("https://github.com/")


def test_icon_is_a_128_pixel_png():
    from PIL import Image

    with Image.open(MODULE_DIR / "Resources" / "Icons" / "EdgeFusion.png") as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)


def test_icon_generator_reproduces_the_icon():
    import importlib.util

    import numpy as np
    from PIL import Image

    spec = importlib.util.spec_from_file_location("make_icon", REPO / "Resources" / "Icons" / "make_icon.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    with Image.open(MODULE_DIR / "Resources" / "Icons" / "EdgeFusion.png") as icon:
        np.testing.assert_array_equal(np.asarray(icon.convert("RGBA")), generator.draw())


# ---------------------------------------------------------------- module source and UI


def parameter_node_fields() -> set[str]:
    tree = ast.parse(MODULE_SOURCE)
    wrapper = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "EdgeFusionParameterNode")
    return {statement.target.id for statement in wrapper.body if isinstance(statement, ast.AnnAssign)}


def ui_widgets() -> dict[str, ElementTree.Element]:
    root = ElementTree.parse(MODULE_DIR / "Resources" / "UI" / "EdgeFusion.ui").getroot()
    return {widget.get("name"): widget for widget in root.iter("widget")}


def test_ui_bindings_name_parameter_node_fields():
    bound = {}
    for name, widget in ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[name] = prop.find("string").text
    assert set(bound.values()) <= parameter_node_fields()
    # Every field is bound in the .ui file, except those the widget binds by hand (see EdgeFusion.py)
    # and the last result, which the Display controls act on.
    assert parameter_node_fields() - set(bound.values()) == {"fusionRule", "colourTable", "register", "resultMriVolume",
                                                             "resultVolume"}


def test_widgets_used_by_the_module_exist_in_the_ui_file():
    used = set(re.findall(r"self\.ui\.(\w+)", MODULE_SOURCE))
    assert used - set(ui_widgets()) == set()


#: The one part of EdgeFusionLib that Slicer loads at startup: the modality table (plain Python).
STARTUP_LIBRARY_MODULES = {"EdgeFusionLib.modality"}


def test_module_file_imports_no_third_party_package_at_file_scope():
    """Loading the module at Slicer startup must not need torch, SimpleITK or the rest of EdgeFusionLib."""
    allowed = {"enum", "logging", "os", "shutil", "sys", "time", "typing", "qt", "vtk", "ctk", "slicer", "EdgeFusionMRML"}
    for statement in ast.parse(MODULE_SOURCE).body:
        if isinstance(statement, ast.Import):
            names = [alias.name for alias in statement.names]
        elif isinstance(statement, ast.ImportFrom):
            names = [statement.module]
        else:
            continue
        assert {name.split(".")[0] for name in names} <= allowed or set(names) <= STARTUP_LIBRARY_MODULES, ast.unparse(statement)


def test_the_modality_table_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys; import " + ", ".join(STARTUP_LIBRARY_MODULES) + "; "
            "heavy = {'torch', 'SimpleITK', 'numpy', 'scipy', 'PIL'} & set(sys.modules); assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_mrml_layer_imports_only_the_standard_library_and_numpy_at_file_scope():
    import sys

    for path in (MODULE_DIR / "EdgeFusionMRML").glob("*.py"):
        for statement in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(statement, ast.Import):
                roots = {alias.name.split(".")[0] for alias in statement.names}
            elif isinstance(statement, ast.ImportFrom) and statement.level == 0:
                roots = {statement.module.split(".")[0]}
            else:
                continue
            if isinstance(statement, ast.ImportFrom) and statement.module in STARTUP_LIBRARY_MODULES:
                continue
            assert roots <= set(sys.stdlib_module_names) | {"numpy"}, f"{path.name}: {ast.unparse(statement)}"


# ---------------------------------------------------------------- Python requirements inside Slicer

REQUIREMENTS_FILE = MODULE_DIR / "Resources" / "requirements.txt"

#: Imports the packages of a Python process and prints the top-level module names it then holds.
_IMPORTED_ROOTS = "import json, sys; print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))"


def imported_roots(code: str) -> set[str]:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", code + "\n" + _IMPORTED_ROOTS], capture_output=True, text=True,
                            timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.strip().splitlines()[-1]))


def test_requirements_file_is_read_and_checked():
    import sys

    sys.path.insert(0, str(MODULE_DIR))
    from EdgeFusionMRML import dependencies

    requirements = dependencies.read_requirements(REQUIREMENTS_FILE)
    assert "safetensors>=0.4" in requirements and not any("#" in line for line in requirements)
    assert dependencies.missing_requirements(["numpy>=1.0", "numpy>=999", "no-such-distribution-edgefusion"]) == [
        "numpy>=999", "no-such-distribution-edgefusion"]


def test_requirements_cover_every_package_a_fusion_imports():
    """What every fusion method imports, beyond torch (and what torch loads) and Slicer's numpy/SimpleITK,
    must be in Resources/requirements.txt, which the panel installs on the first Apply."""
    import importlib.metadata
    import sys

    from packaging.requirements import Requirement

    baseline = imported_roots("import numpy, SimpleITK, torch")
    fusing = imported_roots(
        "import numpy as np, SimpleITK as sitk\n"
        "from EdgeFusionLib.fusion.pipeline import fuse_images\n"
        "from EdgeFusionLib.fusion.methods import get_method, method_names\n"
        "from EdgeFusionLib.model.network import EHDRAN\n"
        "image = sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 1, (2, 16, 16)).astype(np.float32))\n"
        "model = EHDRAN().eval()  # untrained: only the imports matter here\n"
        "for name in method_names():\n"
        "    fuse_images(image, image, 'ct', method=name, model=model if get_method(name).needs_model else None)\n"
    )
    distributions = importlib.metadata.packages_distributions()  # import name -> distribution names
    required = {Requirement(line).name.lower() for line in REQUIREMENTS_FILE.read_text(encoding="utf-8").splitlines() if line and not line.startswith("#")}
    for root in sorted(fusing - baseline - {"EdgeFusionLib"}):
        if root.startswith("_") or root in sys.stdlib_module_names or root not in distributions:
            continue
        assert {name.lower() for name in distributions[root]} & required, f"{root} is imported by a fusion: add its distribution to {REQUIREMENTS_FILE.name}"
