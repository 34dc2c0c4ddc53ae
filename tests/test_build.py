"""The compiled request path (setup.py): present in the normal build, switchable off.

The rest of the suite runs twice under `make test`, compiled and with
GRAPH_ROUTER_PURE_PYTHON=1, so both builds are held to the same behaviour; these tests
check that each run really exercised the build it claims to.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import graph_router
from graph_router import compiled_modules, executor, httpclient, httpserver, server, upstream

PACKAGE = Path(graph_router.__file__).resolve().parent
PXD_MODULES = sorted(
    ".".join(("graph_router", *p.relative_to(PACKAGE).with_suffix("").parts)) for p in PACKAGE.rglob("*.pxd")
)
PURE = os.environ.get("GRAPH_ROUTER_PURE_PYTHON") == "1"


def test_every_module_with_a_pxd_is_compiled_in_the_normal_build() -> None:
    if PURE:
        assert compiled_modules() == []
        for module in (executor, httpclient, httpserver, server, upstream):
            assert module.__file__ is not None and module.__file__.endswith(".py")
        return
    assert compiled_modules() == PXD_MODULES, (
        "the request path is not compiled: reinstall with a C compiler and Cython (make setup), "
        "or set GRAPH_ROUTER_PURE_PYTHON=1 to test the pure-Python build on purpose"
    )
    for module in (executor, httpclient, httpserver, server, upstream):
        assert module.__file__ is not None and not module.__file__.endswith(".py"), module.__file__


def test_the_switch_loads_the_python_sources_instead() -> None:
    code = (
        "import graph_router, graph_router.server as s, graph_router.telemetry.recorder as r;"
        "print(s.__file__); print(r.__file__); print(graph_router.compiled_modules())"
    )
    env = dict(os.environ, GRAPH_ROUTER_PURE_PYTHON="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    server_file, recorder_file, listed = out.splitlines()
    assert server_file.endswith("graph_router/server.py")
    assert recorder_file.endswith("graph_router/telemetry/recorder.py")
    assert listed == "[]"


def _declared(pxd: Path) -> dict[str, set[str]]:
    """Class name -> attribute and cpdef method names declared for it in a .pxd."""
    classes: dict[str, set[str]] = {}
    current: set[str] | None = None
    for line in pxd.read_text().splitlines():
        if m := re.match(r"cdef class (\w+)", line):
            current = classes[m.group(1)] = set()
        elif current is not None and (m := re.match(r"\s+cdef (?:public |readonly )?[\w.]+ (\w+)$", line)):
            current.add(m.group(1))
        elif not line.startswith((" ", "\t")) and line.strip():
            current = None
    return classes


def test_compiled_classes_declare_every_attribute_they_use() -> None:
    """An extension type has no __dict__: an attribute missing from its .pxd fails only when compiled.

    The suite would catch it on a path it covers; this catches it on every path.
    """
    problems = []
    for pxd in sorted(PACKAGE.rglob("*.pxd")):
        declared = _declared(pxd)
        tree = ast.parse(pxd.with_suffix(".py").read_text())
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name in declared):
            known = declared[cls.name] | {
                n.name for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            } | {t.id for n in cls.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
            for node in ast.walk(cls):
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                        and node.value.id == "self" and node.attr not in known):
                    problems.append(f"{pxd.name}: {cls.name}.{node.attr} (line {node.lineno})")
    assert not problems, "not declared in the .pxd: " + ", ".join(sorted(set(problems)))
    assert sum(len(_declared(p)) for p in PACKAGE.rglob("*.pxd")) >= 12  # the parser read the files


def test_the_wheel_carries_the_demo_graph(tmp_path: Path) -> None:
    """An installed (non-editable) package has no checkout around it: the demo needs its own copy."""
    env = dict(os.environ, GRAPH_ROUTER_PURE_PYTHON="1")  # packaging only: no need to compile
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(PACKAGE.parent)],
        env=env, check=True, capture_output=True, timeout=300,
    )
    (wheel,) = tmp_path.glob("graph_router-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("graph_router/demo/rag-pipeline.yaml")
        names = archive.namelist()
    assert shipped == (PACKAGE.parent / "config" / "samples" / "rag-pipeline.yaml").read_bytes()
    assert "graph_router/httpserver.pxd" in names and "graph_router/httpserver.py" in names
