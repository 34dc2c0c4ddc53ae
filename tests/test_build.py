"""The compiled request path (setup.py): present in the normal build, switchable off.

The rest of the suite runs twice under `make test`, compiled and with
GRAPH_ROUTER_PURE_PYTHON=1, so both builds are held to the same behaviour; these tests
check that each run really exercised the build it claims to.
"""

from __future__ import annotations

import os
import subprocess
import sys
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
