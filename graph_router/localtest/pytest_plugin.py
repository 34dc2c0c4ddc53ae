"""pytest plugin: every ``*.suite.yaml`` file pytest is pointed at becomes tests, one per case.

For projects that run everything through pytest. Enable it with
``pytest -p graph_router.localtest.pytest_plugin`` or, in the root ``conftest.py``,
``pytest_plugins = ["graph_router.localtest.pytest_plugin"]``; then
``pytest config/samples`` collects the suites there. Failures read as in
``graph-router test``: each mismatch with its suite file and line, the answer, the path
taken and the calls the stubs received. A suite file with a mistake is a collection error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .report import case_details
from .runner import CaseResult, SuiteRunner
from .suite import LoadedSuite, SuiteError, load_suite


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.name.endswith(".suite.yaml"):
        return SuiteFile.from_parent(parent, path=file_path)
    return None


class CaseFailed(Exception):
    """A case whose expectations were not met (or that could not run)."""

    def __init__(self, result: CaseResult) -> None:
        super().__init__(result.failures[0] if result.failures else result.outcome)
        self.result = result


class SuiteFile(pytest.File):
    """One suite file: loading it is collection, so its mistakes are collection errors."""

    def collect(self) -> Iterator[pytest.Item]:
        try:
            loaded = load_suite(self.path)
        except SuiteError as exc:
            raise self.CollectError(str(exc)) from exc
        for index, case in enumerate(loaded.suite.cases):
            yield SuiteCase.from_parent(self, name=case.name, loaded=loaded, index=index)


class SuiteCase(pytest.Item):
    """One case of a suite, run with its own stub server and client."""

    def __init__(self, *, loaded: LoadedSuite, index: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loaded = loaded
        self.index = index

    def runtest(self) -> None:
        result = asyncio.run(self._run())
        if result.outcome != "passed":
            raise CaseFailed(result)

    async def _run(self) -> CaseResult:
        async with SuiteRunner() as runner:
            return await runner.run_case(self.loaded, self.index)

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None
    ) -> str | Any:
        if isinstance(excinfo.value, CaseFailed):
            return "\n".join(case_details(excinfo.value.result))
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int, str]:
        line = self.loaded.doc.line(("cases", self.index))
        return self.path, line - 1, f"{self.loaded.name}::{self.name}"
