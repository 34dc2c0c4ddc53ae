"""Every sample suite in config/samples passes, so the samples stay true to the graphs beside them."""

from __future__ import annotations

from pathlib import Path

import pytest

from graph_router.localtest.report import case_details
from graph_router.localtest.runner import run_files

SAMPLES = Path(__file__).resolve().parents[1] / "config" / "samples"
SUITES = sorted(SAMPLES.glob("*.suite.yaml"))


def test_samples_have_suites() -> None:
    """The RAG pipeline and the classic V1 chain each have a suite beside the graph."""
    names = {p.name for p in SUITES}
    assert {"rag-pipeline.suite.yaml", "classic-v1-chain.suite.yaml"} <= names


@pytest.mark.parametrize("suite", SUITES, ids=[p.name for p in SUITES])
async def test_sample_suite_passes(suite: Path) -> None:
    """Every case of the sample suite passes."""
    (result,) = await run_files([suite])
    assert result.error is None, result.error
    failed = [c for c in result.cases if c.outcome != "passed"]
    assert not failed, "\n\n".join("\n".join(case_details(c)) for c in failed)
    assert result.cases
