"""What a run looks like to people (pytest-style text) and to CI (JUnit XML).

The text report is written as cases finish, so a slow case shows where it is; the
failures section after it gives, for each failed case, every mismatch with its suite
file and line, the answer, the path the request took and the calls the stubs got.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from .runner import CaseResult, SuiteResult
from .stubs import RecordedCall

WIDTH = 80
NOTHING_RAN = 5  # pytest's exit status when no test was collected
_MARK = {"passed": ".", "failed": "F", "error": "E"}
_WORD = {"passed": "PASSED", "failed": "FAILED", "error": "ERROR"}
_SHOW = 200


def explain_lines(entries: Sequence[dict[str, object]]) -> list[str]:
    """The executor's ``explain`` records as indented lines: nodes, conditions, draws, steps."""
    depth: dict[str, int] = {}
    lines = []
    for entry in entries:
        node = str(entry.get("node", ""))
        level = depth.setdefault(node, 0)
        pad = "  " * level
        if "kind" in entry:
            lines.append(f"{pad}node {node} ({entry['kind']})")
        elif "condition" in entry:
            verdict = "matched" if entry.get("matched") else "no match"
            lines.append(f"{pad}  condition {entry['condition']} on step {entry['step']}: {verdict}")
        elif "draw" in entry:
            lines.append(f"{pad}  splitter drew {entry['draw']}: step {entry['step']}")
        elif "target" in entry:
            target = str(entry["target"])
            if target.startswith("node:"):
                depth[target.removeprefix("node:")] = level + 2
            ms = entry.get("ms")
            took = f" ({float(ms):.1f} ms)" if isinstance(ms, int | float) else ""
            if "error" in entry:
                outcome = f"failed: {entry['error']}"
            elif "status" in entry:
                outcome = str(entry["status"])
            else:
                outcome = "no answer"
            lines.append(f"{pad}  step {entry['step']} -> {target}: {outcome}{took}")
        else:
            lines.append(f"{pad}  {entry}")
    return lines


def call_lines(calls: Sequence[RecordedCall]) -> list[str]:
    """One line per call a stub received: order, service, method, path and body."""
    return [f"#{i} {c.service} {c.method} {c.path} {_cut(c.body)}" for i, c in enumerate(calls, 1)]


def _cut(raw: bytes) -> str:
    if not raw:
        return "(empty body)"
    text = raw.decode("utf-8", "replace")
    return text if len(text) <= _SHOW else text[:_SHOW] + "..."


def _rule(title: str, char: str = "=") -> str:
    title = f" {title} " if title else ""
    left = max((WIDTH - len(title)) // 2, 3)
    right = max(WIDTH - len(title) - left, 3)
    return f"{char * left}{title}{char * right}"


def case_id(result: CaseResult) -> str:
    return f"{result.suite.path}::{result.name}"


def case_details(result: CaseResult) -> list[str]:
    """Everything needed to see why a case failed, without rerunning it."""
    lines = [line for f in result.failures for line in f.splitlines()]
    lines.append(f"case {result.name!r} at {result.where}")
    if result.status is not None:
        lines.append(f"answer: {result.status} {_cut(result.body)}")
    if result.explain:
        lines.append("path taken:")
        lines += [f"  {line}" for line in explain_lines(result.explain)]
    lines.append("calls received:" if result.calls else "calls received: none")
    lines += [f"  {line}" for line in call_lines(result.calls)]
    return lines


class TextReport:
    """Writes a run as pytest does: a line per suite file, then failures, then a summary."""

    def __init__(self, out: TextIO, verbose: bool = False) -> None:
        self._out = out
        self._verbose = verbose

    def _write(self, text: str) -> None:
        self._out.write(text)
        self._out.flush()

    def start(self, files: int) -> None:
        self._write(_rule("graph-router test") + "\n")
        self._write(f"{files} suite file(s)\n\n")

    def suite_started(self, path: Path | str) -> None:
        if not self._verbose:
            self._write(f"{path} ")

    def case_done(self, result: CaseResult) -> None:
        if self._verbose:
            self._write(f"{case_id(result)} {_WORD[result.outcome]} ({result.seconds * 1000:.0f} ms)\n")
        else:
            self._write(_MARK[result.outcome])

    def suite_done(self, result: SuiteResult) -> None:
        if result.error is not None:
            self._write(f"{result.path} ERROR\n" if self._verbose else "E\n")
        elif not self._verbose:
            self._write("\n")

    def finish(self, results: Sequence[SuiteResult], seconds: float) -> int:
        """The failures and the summary line; returns the exit status (0: all passed)."""
        broken = [s for s in results if s.error is not None]
        failed = [c for s in results for c in s.cases if c.outcome != "passed"]
        passed = sum(1 for s in results for c in s.cases if c.outcome == "passed")
        if broken or failed:
            self._write("\n" + _rule("FAILURES") + "\n")
        for suite in broken:
            self._write(_rule(f"{suite.path} could not be loaded", "_") + "\n")
            self._write(f"{suite.error}\n")
        for case in failed:
            self._write(_rule(case_id(case), "_") + "\n")
            self._write("\n".join(case_details(case)) + "\n")
        if broken or failed:
            self._write(_rule("short test summary info") + "\n")
            for suite in broken:
                first = (suite.error or "").splitlines()[0] if suite.error else ""
                self._write(f"ERROR {suite.path} - {first}\n")
            for case in failed:
                first = case.failures[0].splitlines()[0] if case.failures else ""
                self._write(f"{_WORD[case.outcome]} {case_id(case)} - {first}\n")
        counts = []
        n_failed = sum(1 for c in failed if c.outcome == "failed")
        n_errors = sum(1 for c in failed if c.outcome == "error") + len(broken)
        if n_failed:
            counts.append(f"{n_failed} failed")
        if passed:
            counts.append(f"{passed} passed")
        if n_errors:
            counts.append(f"{n_errors} error{'s' if n_errors > 1 else ''}")
        summary = ", ".join(counts) or "no cases ran"
        self._write(_rule(f"{summary} in {seconds:.2f}s") + "\n")
        if broken or failed:
            return 1
        return 0 if passed else NOTHING_RAN


def junit_xml(results: Sequence[SuiteResult], seconds: float) -> ET.ElementTree[ET.Element]:
    """A JUnit XML report: one testsuite per suite file, one testcase per case."""
    root = ET.Element("testsuites", name="graph-router", time=f"{seconds:.3f}")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for suite in results:
        failures = sum(1 for c in suite.cases if c.outcome == "failed")
        errors = sum(1 for c in suite.cases if c.outcome == "error") + (suite.error is not None)
        tests = len(suite.cases) + (suite.error is not None)
        node = ET.SubElement(
            root,
            "testsuite",
            name=suite.name,
            file=str(suite.path),
            tests=str(tests),
            failures=str(failures),
            errors=str(errors),
            skipped="0",
            time=f"{suite.seconds:.3f}",
        )
        if suite.error is not None:
            case = ET.SubElement(node, "testcase", classname=suite.name, name="(load)", file=str(suite.path))
            ET.SubElement(case, "error", message=suite.error.splitlines()[0], type="SuiteError").text = suite.error
        for result in suite.cases:
            line = result.where.rsplit(":", 1)[-1]
            case = ET.SubElement(
                node,
                "testcase",
                classname=suite.name,
                name=result.name,
                file=str(suite.path),
                line=line,
                time=f"{result.seconds:.3f}",
            )
            if result.outcome != "passed":
                tag = "failure" if result.outcome == "failed" else "error"
                message = result.failures[0].splitlines()[0] if result.failures else result.outcome
                kind = "AssertionError" if tag == "failure" else "Error"
                ET.SubElement(case, tag, message=message, type=kind).text = "\n".join(case_details(result))
            if result.explain:
                ET.SubElement(case, "system-out").text = "\n".join(explain_lines(result.explain))
        for key, value in (("tests", tests), ("failures", failures), ("errors", errors)):
            totals[key] += value
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return ET.ElementTree(root)
