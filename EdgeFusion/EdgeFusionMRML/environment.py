"""Where EdgeFusionLib and the shared resources are, and how to reload them.

Two layouts are supported, and every path in the module is found through here:

* Installed extension (Extensions Manager, or a build tree): ``EdgeFusion.py``,
  ``EdgeFusionLib/`` and ``Resources/`` are siblings in Slicer's
  ``qt-scripted-modules`` folder (``EdgeFusion/CMakeLists.txt`` installs them so).
* Source checkout (the ``EdgeFusion`` folder added to the additional module paths
  in Application Settings): ``<repo>/EdgeFusion/EdgeFusion.py`` with
  ``<repo>/EdgeFusionLib`` and ``<repo>/Resources`` one level up.

In both layouts the shared resources (``Resources/Models``, ``Resources/SampleData``)
sit beside ``EdgeFusionLib/``, which is also where ``EdgeFusionLib.model.weights`` looks.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

#: Folder of EdgeFusion.py (this file is EdgeFusion/EdgeFusionMRML/environment.py).
MODULE_DIR = Path(__file__).resolve().parent.parent

LIBRARY_PACKAGE = "EdgeFusionLib"

#: Packages reloaded by the module's "Reload" button, in addition to EdgeFusion.py itself.
RELOADABLE_PACKAGES = (LIBRARY_PACKAGE, "EdgeFusionMRML")


def library_root() -> Path:
    """Folder that contains ``EdgeFusionLib/`` (installed layout first, then source checkout)."""
    for candidate in (MODULE_DIR, MODULE_DIR.parent):
        if (candidate / LIBRARY_PACKAGE / "__init__.py").is_file():
            return candidate
    raise ModuleNotFoundError(
        f"{LIBRARY_PACKAGE} was not found beside {MODULE_DIR} or in {MODULE_DIR.parent}; "
        "reinstall the EdgeFusion extension or use a complete source checkout"
    )


def ensure_library_importable() -> None:
    """Make ``import EdgeFusionLib`` work, adding its folder to ``sys.path`` only if needed.

    Slicer puts the module folder on ``sys.path``, which covers the installed layout;
    a source checkout needs its root added.
    """
    if importlib.util.find_spec(LIBRARY_PACKAGE) is not None:
        return
    root = str(library_root())
    if root not in sys.path:
        sys.path.append(root)


def library_search_path() -> str:
    """The folder a separate Python process must put on ``sys.path`` to import EdgeFusionLib."""
    ensure_library_importable()
    spec = importlib.util.find_spec(LIBRARY_PACKAGE)
    return str(Path(spec.origin).resolve().parent.parent)


def shared_resource_path(*parts: str) -> Path:
    """A path under the ``Resources/`` folder that sits beside ``EdgeFusionLib/``."""
    return library_root().joinpath("Resources", *parts)


def reload_edgefusion_modules() -> list[str]:
    """``importlib.reload`` every loaded EdgeFusionLib / EdgeFusionMRML module; returns their names.

    Modules are reloaded in reverse import order: a module is put in ``sys.modules``
    before the modules it imports, so going backwards reloads what a module depends
    on before the module itself (``from .x import y`` then picks up the new ``y``).
    """
    names = [
        name
        for name in list(sys.modules)
        if any(name == package or name.startswith(package + ".") for package in RELOADABLE_PACKAGES)
    ]
    for name in reversed(names):
        module = sys.modules.get(name)
        if module is not None:
            importlib.reload(module)
    return list(reversed(names))
