"""Runs suite cases in process and checks what they expect.

A case compiles the suite's graph with every serviceName pointed at a stub, runs it
with the real executor and upstream client (so stubs are called over loopback TCP,
exactly as models would be), then compares the answer and the calls the stubs
recorded with the case's expectations. Each mismatch becomes one readable line that
names the suite file and line of the expectation that failed.
"""

from __future__ import annotations

import asyncio
import difflib
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson

from .. import gjson
from ..errors import GraphError, RequestError
from ..executor import Executor
from ..headers import HeaderPropagator
from ..httpserver import error_body
from ..plan import compile_graph
from ..server import GRAPH_FAILED
from ..spec import InferenceGraph
from ..upstream import UpstreamClient
from .stubs import RecordedCall, StubServer
from .suite import BodyChecks, CallExpect, Case, LoadedSuite, Loc, StubSpec, SuiteError, load_suite

Outcome = Literal["passed", "failed", "error"]
OnCase = Callable[["CaseResult"], None]
_SHOW = 300  # characters of a value shown in a message before it is cut


@dataclass(slots=True)
class CaseResult:
    """How one case went; ``failures`` are readable lines, empty when it passed."""

    suite: LoadedSuite
    index: int
    outcome: Outcome
    failures: list[str] = field(default_factory=list)
    status: int | None = None
    body: bytes = b""
    calls: list[RecordedCall] = field(default_factory=list)
    explain: list[dict[str, object]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def case(self) -> Case:
        return self.suite.suite.cases[self.index]

    @property
    def name(self) -> str:
        return self.case.name

    @property
    def where(self) -> str:
        return self.suite.case_where(self.index)


@dataclass(slots=True)
class SuiteResult:
    """A suite file's cases, or why it could not be run (``error``)."""

    path: Path
    cases: list[CaseResult] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0

    @property
    def name(self) -> str:
        return self.path.name.removesuffix(".yaml").removesuffix(".suite")


class ScriptedDraws(random.Random):
    """Splitter draws a case chose (``splitterDraws``), then seeded ones: runs repeat exactly."""

    def __init__(self, draws: Sequence[int], seed: int) -> None:
        super().__init__(seed)
        self._draws = list(draws)
        self._next = 0

    def randrange(self, start: int, stop: int | None = None, step: int = 1) -> int:
        if self._next < len(self._draws):
            self._next += 1
            return self._draws[self._next - 1]
        return super().randrange(start, stop, step)


class SuiteRunner:
    """One stub server and one upstream client for a whole run; cases run one at a time."""

    def __init__(self) -> None:
        self._stubs = StubServer()
        self._client = UpstreamClient()

    async def __aenter__(self) -> SuiteRunner:
        await self._stubs.start()
        await self._client.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.close()
        await self._stubs.close()

    async def run_file(self, path: str | Path, on_case: OnCase | None = None) -> SuiteResult:
        """Load and run one suite file; a file that does not load is a result with ``error``."""
        started = time.perf_counter()
        try:
            loaded = load_suite(path)
        except SuiteError as exc:
            return SuiteResult(Path(path), error=str(exc), seconds=time.perf_counter() - started)
        return await self.run_suite(loaded, on_case=on_case)

    async def run_suite(
        self, loaded: LoadedSuite, only: Iterable[int] | None = None, on_case: OnCase | None = None
    ) -> SuiteResult:
        """Run the cases ``only`` names (default: all) in order; ``on_case`` hears of each as it ends."""
        started = time.perf_counter()
        results = []
        for i in range(len(loaded.suite.cases)) if only is None else only:
            result = await self.run_case(loaded, i)
            if on_case is not None:
                on_case(result)
            results.append(result)
        return SuiteResult(loaded.path, results, seconds=time.perf_counter() - started)

    async def run_case(self, loaded: LoadedSuite, index: int) -> CaseResult:
        """Run case ``index`` of a loaded suite and check its expectations."""
        started = time.perf_counter()
        result = await self._run_case(loaded, index)
        result.seconds = time.perf_counter() - started
        return result

    async def _run_case(self, loaded: LoadedSuite, index: int) -> CaseResult:
        case = loaded.suite.cases[index]
        result = CaseResult(loaded, index, "passed")
        stubs = {**loaded.suite.stubs, **case.stubs}
        missing = _missing_stubs(loaded, stubs)
        if missing:
            result.outcome = "error"
            result.failures = [f"{loaded.case_where(index)}: {m}" for m in missing]
            return result
        urls = self._stubs.configure(stubs)
        names = {u.service_name for u in loaded.uses if u.service_name}
        try:
            plan = compile_graph(
                _redirect(loaded.graph, {k: v for k, v in urls.items() if k not in names}),
                {k: v for k, v in urls.items() if k in names},
            )
        except GraphError as exc:
            result.outcome = "error"
            result.failures = [f"{loaded.case_where(index)}: the graph cannot run with these stubs: {exc}"]
            return result
        executor = Executor(self._client, ScriptedDraws(case.splitter_draws, case.seed))
        headers = HeaderPropagator(loaded.suite.propagate_headers).select(case.request.headers)
        try:
            async with asyncio.timeout(case.timeout):
                answer = await executor.run(plan, _request_body(case), headers, result.explain)
                result.status, result.body = answer.status, await answer.whole()
        except RequestError as exc:
            result.status = exc.status
            result.body = error_body(GRAPH_FAILED, exc.cause)
        except TimeoutError:
            result.outcome = "error"
            result.calls = list(self._stubs.calls)
            result.failures = [
                f"{loaded.doc.where(('cases', index, 'timeout'))}: the graph did not answer within "
                f"{case.timeout:g}s (the case's timeout)"
            ]
            return result
        result.calls = list(self._stubs.calls)
        result.failures = [f"{loaded.case_where(index)}: {p}" for p in self._stubs.problems]
        result.failures += _Checker(loaded, index, result).check()
        if result.failures:
            result.outcome = "failed"
        return result


async def run_files(paths: Sequence[str | Path]) -> list[SuiteResult]:
    """Run every case of every suite file, in order."""
    async with SuiteRunner() as runner:
        return [await runner.run_file(p) for p in paths]


def _request_body(case: Case) -> bytes:
    if case.request.given("body"):
        return orjson.dumps(case.request.body)
    if case.request.text is not None:
        return case.request.text.encode()
    return b""


def _missing_stubs(loaded: LoadedSuite, stubs: dict[str, StubSpec]) -> list[str]:
    """serviceName steps with neither a stub nor a URL: they cannot run on a laptop."""
    problems = []
    seen: set[str] = set()
    for use in loaded.uses:
        name = use.service_name
        if not name or name in stubs or (use.service_url and use.service_url in stubs) or name in seen:
            continue
        seen.add(name)
        problems.append(
            f"no stub for service {name!r} ({use.describe()}): add one under 'stubs:' "
            f"({loaded.where(('stubs',))}) or in this case"
        )
    return problems


def _redirect(graph: InferenceGraph, by_url: dict[str, str]) -> InferenceGraph:
    """The graph with steps whose serviceUrl has a stub pointed at that stub."""
    if not by_url:
        return graph
    nodes = {}
    for name, node in graph.spec.nodes.items():
        steps = [
            s.model_copy(update={"service_url": by_url[s.service_url]})
            if s.service_url in by_url and not s.node_name
            else s
            for s in node.steps
        ]
        nodes[name] = node.model_copy(update={"steps": steps})
    return graph.model_copy(update={"spec": graph.spec.model_copy(update={"nodes": nodes})})


# ----------------------------------------------------------------------- checking


class _Checker:
    """Compares one case's answer and recorded calls with what it expects."""

    def __init__(self, loaded: LoadedSuite, index: int, result: CaseResult) -> None:
        self.loaded = loaded
        self.index = index
        self.result = result
        self.expect = loaded.suite.cases[index].expect
        self.failures: list[str] = []

    def fail(self, loc: Loc, message: str) -> None:
        full: Loc = ("cases", self.index, "expect", *loc)
        label = _label(loc)
        self.failures.append(f"{self.loaded.where(full)}: {label}: {message}")

    def check(self) -> list[str]:
        status = self.result.status
        if self.expect.status is not None:
            if status != self.expect.status:
                self.fail(("status",), f"expected {self.expect.status}, got {status}{self._body_hint()}")
        elif status is None or not 200 <= status <= 299:
            self.fail((), f"expected a 2xx status (no 'status' given), got {status}{self._body_hint()}")
        self.body((), self.expect, self.result.body)
        if self.expect.calls is not None:
            self.calls()
        return self.failures

    def _body_hint(self) -> str:
        return f" with body {_show_bytes(self.result.body)}"

    def body(self, loc: Loc, checks: BodyChecks, raw: bytes) -> None:
        """Whole-body equality and GJSON paths of ``raw``; ``loc`` is where ``checks`` sit."""
        base = loc
        if checks.text is not None and raw != checks.text.encode():
            self.fail((*base, "text"), f"expected {checks.text!r}, got {_show_bytes(raw)}")
        if checks.given("body"):
            try:
                actual = orjson.loads(raw)
            except orjson.JSONDecodeError:
                self.fail((*base, "body"), f"expected JSON {_show(checks.body)}, got {_show_bytes(raw)}")
            else:
                diff = first_difference(checks.body, actual)
                if diff is not None:
                    self.fail((*base, "body"), f"{diff}\n    whole body: {_show_bytes(raw)}")
        if not (checks.paths or checks.exists or checks.absent):
            return
        if not gjson.valid(raw):
            self.fail((*base, "paths"), f"paths need a JSON body, got {_show_bytes(raw)}")
            return
        for path, want in checks.paths.items():
            got = gjson.compile_path(path).get(raw)
            if not got.exists:
                self.fail((*base, "paths", path), f"{path!r} does not exist in {_show_bytes(raw)}")
            elif not same(want, got.value()):
                self.fail((*base, "paths", path), f"{path!r} is {got.raw}, expected {_show(want)}")
        for i, path in enumerate(checks.exists):
            if not gjson.compile_path(path).get(raw).exists:
                self.fail((*base, "exists", i), f"{path!r} does not exist in {_show_bytes(raw)}")
        for i, path in enumerate(checks.absent):
            got = gjson.compile_path(path).get(raw)
            if got.exists:
                self.fail((*base, "absent", i), f"{path!r} exists (it is {got.raw}) but should not")

    def calls(self) -> None:
        expected = self.expect.calls or []
        actual = self.result.calls
        real = {k for k, v in {**self.loaded.suite.stubs, **self.loaded.suite.cases[self.index].stubs}.items()
                if not v.is_stub}
        for i, one in enumerate(expected):
            if one.service in real:
                self.fail(("calls", i), f"{one.service!r} is a real URL, not a stub: calls are not recorded")
        made = ", ".join(c.service for c in actual) or "none"
        if self.expect.ordered:
            pairs = self._ordered(expected, actual, made)
        else:
            pairs = []
            services = dict.fromkeys([c.service for c in expected] + [c.service for c in actual])
            for service in services:
                want = [i for i, c in enumerate(expected) if c.service == service]
                got = [c for c in actual if c.service == service]
                if len(want) != len(got):
                    loc: Loc = ("calls", want[len(got)]) if len(want) > len(got) else ("calls",)
                    self.fail(loc, f"expected {len(want)} call(s) to {service!r}, got {len(got)} "
                              f"(calls made: {made})")
                pairs.extend(zip(want, got, strict=False))
        for i, got_call in pairs:
            want_call = expected[i]
            self.body(("calls", i), want_call, got_call.body)
            for name, value in want_call.headers.items():
                values = got_call.header(name)
                if value not in values:
                    self.fail(("calls", i, "headers", name),
                              f"got {values or 'no such header'}, expected {value!r}")

    def _ordered(
        self, expected: Sequence[CallExpect], actual: Sequence[RecordedCall], made: str
    ) -> list[tuple[int, RecordedCall]]:
        """Align expected and actual calls by service, so one missing call is one message."""
        pairs: list[tuple[int, RecordedCall]] = []
        matcher = difflib.SequenceMatcher(
            a=[c.service for c in expected], b=[c.service for c in actual], autojunk=False
        )
        for op, e0, e1, a0, a1 in matcher.get_opcodes():
            if op == "equal":
                pairs.extend((e0 + k, actual[a0 + k]) for k in range(e1 - e0))
                continue
            for k in range(max(e1 - e0, a1 - a0)):
                e, a = e0 + k, a0 + k
                if e < e1 and a < a1:
                    self.fail(("calls", e), f"expected call #{a + 1} to go to {expected[e].service!r}, "
                              f"it went to {actual[a].service!r} (calls made: {made})")
                elif e < e1:
                    self.fail(("calls", e), f"expected a call to {expected[e].service!r} here, "
                              f"it was not made (calls made: {made})")
                else:
                    self.fail(("calls",), f"unexpected call #{a + 1} to {actual[a].service!r} "
                              f"(calls made: {made})")
        return pairs


def _label(loc: Loc) -> str:
    out = "expect"
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part and ("." in part or "#" in part or " " in part):
            out += f"[{part!r}]"
        elif part:
            out += f".{part}"
    return out


def same(expected: Any, actual: Any) -> bool:
    """JSON equality: 1 == 1.0, but true is not 1 and "1" is not 1."""
    return first_difference(expected, actual) is None


def first_difference(expected: Any, actual: Any, at: str = "") -> str | None:
    """Where two JSON values first differ, as a GJSON-style path and both values; None if equal."""
    where = f"at {at!r}" if at else "the body"
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in expected:
            if key not in actual:
                return f"{where}: key {key!r} is missing (expected {_show(expected[key])})"
        for key in actual:
            if key not in expected:
                return f"{where}: unexpected key {key!r} (it is {_show(actual[key])})"
        for key in expected:
            diff = first_difference(expected[key], actual[key], f"{at}.{key}" if at else str(key))
            if diff:
                return diff
        return None
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return f"{where}: expected {len(expected)} item(s), got {len(actual)}: {_show(actual)}"
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            diff = first_difference(e, a, f"{at}.{i}" if at else str(i))
            if diff:
                return diff
        return None
    if _scalar_equal(expected, actual):
        return None
    return f"{where}: expected {_show(expected)}, got {_show(actual)}"


def _scalar_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and bool(a == b)


def _show(value: Any) -> str:
    try:
        text = orjson.dumps(value).decode()
    except TypeError:
        text = repr(value)
    return text if len(text) <= _SHOW else text[:_SHOW] + "..."


def _show_bytes(raw: bytes) -> str:
    if not raw:
        return "(empty)"
    text = raw.decode("utf-8", "replace")
    return text if len(text) <= _SHOW else text[:_SHOW] + "..."
