"""Build hook: compile the request path with Cython when a compiler is at hand.

The modules with a ``.pxd`` beside them are compiled. They are plain, type-checked
Python; the ``.pxd`` declares their hot classes as extension types, so the compiled
build reaches attributes and methods in C instead of through dictionaries: about a
third of the router's CPU per request (see README, "Performance"). Everything else
is in pyproject.toml.

No compiler, no Cython, or ``GRAPH_ROUTER_PURE_PYTHON=1``: the same package installs as
pure Python, slower but identical in behaviour (the test suite runs both ways).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

# The rule: a module with a .pxd beside it is compiled (the request path).
COMPILED = sorted(str(pxd.with_suffix(".py")) for pxd in Path("graph_router").rglob("*.pxd"))

SAMPLE = Path("config/samples/rag-pipeline.yaml")

DIRECTIVES = {
    "language_level": 3,
    # Keep Python's semantics where they differ from C's: these modules must behave the
    # same compiled or not.
    "cdivision": False,
    "boundscheck": True,
    "wraparound": True,
    "binding": True,
}


class BuildPyWithSample(build_py):
    """Ship the demo's graph inside the package, so `graph-router demo` works when installed.

    config/samples/rag-pipeline.yaml stays the one copy in the repository (the demo reads
    it there in a checkout); a wheel gets it as graph_router/demo/rag-pipeline.yaml.
    """

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "graph_router" / "demo" / SAMPLE.name
        target.parent.mkdir(parents=True, exist_ok=True)
        self.copy_file(str(SAMPLE), str(target))


class OptionalBuildExt(build_ext):
    """All or nothing: if any module fails to compile, the package installs as pure Python.

    (A partial build cannot load: compiled modules check each other's extension types.)
    """

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any compiler trouble means "install as Python"
            for ext in self.extensions:
                Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            print(f"graph_router: compiled build skipped ({exc}); installing pure Python", file=sys.stderr)


def extensions() -> list[Extension]:
    if os.environ.get("GRAPH_ROUTER_PURE_PYTHON") == "1":
        return []
    try:
        from Cython.Build import cythonize

        built = list(cythonize(COMPILED, compiler_directives=DIRECTIVES, quiet=True))
    except Exception as exc:  # no Cython, or it rejected a module: install as Python
        print(f"graph_router: not compiling the request path ({exc}); installing pure Python", file=sys.stderr)
        return []
    if os.name == "posix":
        # Cython declares a coroutine's C return type from its annotation and then returns
        # a plain object pointer: harmless, but GCC 14 makes that warning an error.
        for ext in built:
            ext.extra_compile_args.append("-Wno-incompatible-pointer-types")
    return built


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt, "build_py": BuildPyWithSample})
