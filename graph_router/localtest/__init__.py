"""Running, drawing and testing InferenceGraphs on a laptop or in CI, with no cluster.

``suite`` reads suite and services files, ``stubs`` serves stand-in models on loopback,
``runner`` runs cases through the real executor and checks them, ``report`` prints
them for people and CI, ``render`` draws graphs, ``pytest_plugin`` runs suites from pytest.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from .report import case_details
from .runner import CaseResult, SuiteResult, SuiteRunner, run_files
from .suite import LoadedSuite, SuiteError, load_services, load_suite

__all__ = [
    "CaseResult",
    "LoadedSuite",
    "SuiteError",
    "SuiteResult",
    "SuiteRunner",
    "assert_suite_passes",
    "load_services",
    "load_suite",
    "run_files",
]


def assert_suite_passes(path: str | Path) -> SuiteResult:
    """Run one suite file from a plain test function; AssertionError lists every failure.

    For projects that keep their own pytest tests: ``assert_suite_passes("x.suite.yaml")``.
    Call it outside a running event loop (a plain ``def test_...``).
    """
    (result,) = asyncio.run(run_files([path]))
    if result.error is not None:
        raise AssertionError(result.error)
    bad = [c for c in result.cases if c.outcome != "passed"]
    if bad:
        raise AssertionError("\n\n".join("\n".join(case_details(c)) for c in bad))
    return result
