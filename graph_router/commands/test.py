"""``graph-router test SUITE...``: run test suites against stubbed services, as pytest would.

Exit status 0 when every case passed, 1 when any failed or a suite could not be loaded,
5 when no suite file or no case was found (pytest's "no tests collected").
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import GraphError


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "test",
        help="run *.suite.yaml test suites against stub services; exit 0 only when all pass",
        description="Run test suites: each names a graph, stub services and cases. Exit 0 when every case "
        "passed, 1 when any failed or a suite could not be loaded, 5 when no suite or case was found.",
    )
    p.add_argument("suites", nargs="+", metavar="SUITE",
                   help="a suite file, or a directory searched for *.suite.yaml")
    p.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report here (for CI)")
    p.add_argument("--verbose", "-v", action="store_true", help="one line per case")
    p.add_argument("-k", dest="keyword", metavar="TEXT", help="only cases whose name contains TEXT")
    p.set_defaults(func=run)


def find_suites(paths: list[str]) -> list[Path]:
    """Files as given, and every ``*.suite.yaml`` under the directories given, in name order."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(path.rglob("*.suite.yaml")))
        elif path.exists():
            found.append(path)
        else:
            raise GraphError(f"{raw}: no such file or directory")
    return list(dict.fromkeys(found))


def run(args: argparse.Namespace) -> int:
    from ..localtest.report import NOTHING_RAN

    files = find_suites(args.suites)
    if not files:
        print(f"graph-router test: no *.suite.yaml found in {', '.join(args.suites)}", file=sys.stderr)
        return NOTHING_RAN
    return asyncio.run(_run(files, args))


async def _run(files: list[Path], args: argparse.Namespace) -> int:
    from ..localtest.report import TextReport, junit_xml
    from ..localtest.runner import SuiteResult, SuiteRunner
    from ..localtest.suite import SuiteError, load_suite

    report = TextReport(sys.stdout, verbose=args.verbose)
    report.start(len(files))
    started = time.perf_counter()
    results: list[SuiteResult] = []
    async with SuiteRunner() as runner:
        for path in files:
            report.suite_started(path)
            try:
                loaded = load_suite(path)
            except SuiteError as exc:
                result = SuiteResult(path, error=str(exc))
            else:
                only = [i for i, c in enumerate(loaded.suite.cases) if not args.keyword or args.keyword in c.name]
                result = await runner.run_suite(loaded, only, on_case=report.case_done)
            report.suite_done(result)
            results.append(result)
    seconds = time.perf_counter() - started
    status = report.finish(results, seconds)
    if args.junit:
        try:
            junit_xml(results, seconds).write(args.junit, encoding="utf-8", xml_declaration=True)
        except OSError as exc:
            raise GraphError(f"--junit {args.junit}: cannot write: {exc.strerror or exc}") from exc
    return status
