"""graph_router: a fast, observable, KServe-compatible InferenceGraph router.

The request path (every module with a ``.pxd`` beside it) is compiled with Cython when
the package is installed with a compiler at hand; see setup.py. Set
``GRAPH_ROUTER_PURE_PYTHON=1`` to run the Python sources instead, for tracebacks with
source lines, profilers and debuggers, or to check that both builds behave the same.
"""

from __future__ import annotations

import os
import sys
from importlib.abc import MetaPathFinder
from importlib.machinery import EXTENSION_SUFFIXES, SOURCE_SUFFIXES, FileFinder, ModuleSpec, SourceFileLoader
from pathlib import Path
from types import ModuleType

__version__ = "0.1.0"

_HERE = Path(__file__).resolve().parent


class _SourcesOnly(MetaPathFinder):
    """Finds this package's modules as .py files only, passing over compiled ones."""

    def find_spec(self, fullname: str, path: object = None, target: ModuleType | None = None) -> ModuleSpec | None:
        if not fullname.startswith(__name__ + ".") or not isinstance(path, list):
            return None
        for entry in path:
            spec = FileFinder(entry, (SourceFileLoader, SOURCE_SUFFIXES)).find_spec(fullname, target)
            if spec is not None:
                return spec
        return None


if os.environ.get("GRAPH_ROUTER_PURE_PYTHON") == "1":
    sys.meta_path.insert(0, _SourcesOnly())


def compiled_modules() -> list[str]:
    """The request-path modules that run compiled, by name (empty: all pure Python).

    Read off the files (an extension module for this interpreter beside the .pxd),
    not by importing, so that any module may ask while the package is loading.
    """
    if os.environ.get("GRAPH_ROUTER_PURE_PYTHON") == "1":
        return []
    found = []
    for pxd in sorted(_HERE.rglob("*.pxd")):
        if any(pxd.with_name(pxd.stem + suffix).exists() for suffix in EXTENSION_SUFFIXES):
            found.append(".".join((__name__, *pxd.relative_to(_HERE).with_suffix("").parts)))
    return found
