"""Suite files and the runner: cases pass when they should, fail when they should, and say why."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from graph_router.localtest.runner import CaseResult, SuiteRunner, first_difference
from graph_router.localtest.suite import SuiteError, load_services, load_suite

SAMPLES = Path(__file__).resolve().parents[1] / "config" / "samples"
RAG = Path(__file__).resolve().parent / "graphs" / "kserve-rag.yaml"  # plain KServe semantics

RAG_STUBS = """\
stubs:
  bge-embedder: {body: {embedding: [1, 2]}}
  vector-search: {body: {passages: [a, b]}}
  qwen-llm: {body: {answer: Paris}}
"""

TWICE = """\
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata: {name: twice}
spec:
  nodes:
    root:
      routerType: Sequence
      steps:
        - {name: first, serviceName: counter}
        - {name: second, serviceName: counter, data: $response}
"""

FANOUT = """\
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata: {name: fanout}
spec:
  nodes:
    root:
      routerType: Ensemble
      steps:
        - {name: left, serviceName: left}
        - {name: right, serviceName: right}
"""

SPLIT = """\
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata: {name: split}
spec:
  nodes:
    root:
      routerType: Splitter
      steps:
        - {name: main, serviceName: main, weight: 80}
        - {name: canary, serviceName: canary, weight: 20}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def rag_suite(tmp_path: Path, cases: str, stubs: str = RAG_STUBS, extra: str = "") -> Path:
    return write(tmp_path, "t.suite.yaml", f"graph: {RAG}\n{extra}{stubs}cases:\n{textwrap.dedent(cases)}")


async def run_all(path: Path) -> list[CaseResult]:
    async with SuiteRunner() as runner:
        result = await runner.run_suite(load_suite(path))
    return result.cases


def failures(result: CaseResult) -> str:
    return "\n".join(result.failures)


# ---------------------------------------------------------------- passing and failing


async def test_matching_expectations_pass(tmp_path: Path) -> None:
    """A case whose status, body, paths and calls all match passes with no failures."""
    path = rag_suite(tmp_path, """\
        - name: ok
          request: {body: {q: 1}}
          expect:
            status: 200
            body: {answer: Paris}
            paths: {answer: Paris}
            absent: [question]
            calls:
              - {service: bge-embedder, body: {q: 1}}
              - {service: vector-search, paths: {embedding.1: 2}}
              - {service: qwen-llm, body: {passages: [a, b]}}
    """)
    (result,) = await run_all(path)
    assert result.outcome == "passed", failures(result)
    assert result.status == 200
    assert [c.service for c in result.calls] == ["bge-embedder", "vector-search", "qwen-llm"]


async def test_wrong_expectations_fail_with_file_line_and_difference(tmp_path: Path) -> None:
    """Wrong status, body and path expectations each fail, naming the suite line and both values."""
    path = rag_suite(tmp_path, """\
        - name: wrong
          expect:
            status: 201
            body: {answer: Lyon}
            paths:
              answer: Lyon
              missing.key: 1
    """)
    (result,) = await run_all(path)
    assert result.outcome == "failed"
    text = failures(result)
    lines = path.read_text().splitlines()
    status_line = next(i for i, line in enumerate(lines, 1) if "status: 201" in line)
    assert f"t.suite.yaml:{status_line}: expect.status: expected 201, got 200" in text
    assert "expect.body: at 'answer': expected \"Lyon\", got \"Paris\"" in text
    assert "expect.paths.answer: 'answer' is \"Paris\", expected \"Lyon\"" in text
    assert "expect.paths['missing.key']: 'missing.key' does not exist" in text


async def test_missing_status_expectation_means_2xx(tmp_path: Path) -> None:
    """A case that does not give a status fails when the graph answers outside 2xx."""
    path = rag_suite(tmp_path, """\
        - name: silent failure
          stubs: {qwen-llm: {status: 500, body: {e: 1}}}
    """)
    (result,) = await run_all(path)
    assert result.outcome == "failed"
    assert "expected a 2xx status (no 'status' given), got 500" in failures(result)


async def test_missing_stub_is_an_error_naming_the_step(tmp_path: Path) -> None:
    """A serviceName without a stub is an error that names the node, step and where to add it."""
    stubs = "stubs:\n  bge-embedder: {body: {}}\n  vector-search: {body: {}}\n"
    path = rag_suite(tmp_path, "- name: no llm\n", stubs=stubs)
    (result,) = await run_all(path)
    assert result.outcome == "error"
    assert "no stub for service 'qwen-llm' (node 'root' step 'generate')" in failures(result)
    assert "t.suite.yaml:2) or in this case" in failures(result)
    assert result.calls == []


async def test_case_level_stub_fills_a_missing_one(tmp_path: Path) -> None:
    """A stub given only in a case serves that case."""
    stubs = "stubs:\n  bge-embedder: {body: {}}\n  vector-search: {body: {}}\n"
    path = rag_suite(tmp_path, "- name: llm here\n  stubs: {qwen-llm: {text: hi}}\n  expect: {text: hi}\n", stubs=stubs)
    (result,) = await run_all(path)
    assert result.outcome == "passed", failures(result)


async def test_unexpected_call_fails(tmp_path: Path) -> None:
    """A call the case did not list fails the case, naming the call and every call made."""
    path = rag_suite(tmp_path, """\
        - name: forgot the llm
          expect:
            calls: [bge-embedder, vector-search]
    """)
    (result,) = await run_all(path)
    assert result.outcome == "failed"
    assert (
        "expect.calls: unexpected call #3 to 'qwen-llm' (calls made: bge-embedder, vector-search, qwen-llm)"
        in failures(result)
    )


async def test_expected_call_not_made_fails(tmp_path: Path) -> None:
    """A listed call that never happened (the graph stopped early) fails at that entry's line."""
    path = rag_suite(tmp_path, """\
        - name: embedder down
          stubs: {bge-embedder: {fail: refuse}}
          expect:
            status: 500
            calls: [bge-embedder, vector-search]
    """)
    (result,) = await run_all(path)
    assert result.outcome == "failed"
    assert "expect.calls[1]: expected a call to 'vector-search' here, it was not made" in failures(result)


async def test_call_order_is_checked(tmp_path: Path) -> None:
    """Calls in another order than listed fail, unless the case says ordered: false."""
    path = rag_suite(tmp_path, """\
        - name: swapped
          expect:
            calls: [vector-search, bge-embedder, qwen-llm]
        - name: any order
          expect:
            ordered: false
            calls: [vector-search, bge-embedder, qwen-llm]
    """)
    swapped, any_order = await run_all(path)
    assert swapped.outcome == "failed"
    assert "calls made: bge-embedder, vector-search, qwen-llm" in failures(swapped)
    assert any_order.outcome == "passed", failures(any_order)


async def test_unordered_calls_for_an_ensemble(tmp_path: Path) -> None:
    """Ensemble members run concurrently; ordered: false checks each member's calls and count."""
    write(tmp_path, "fanout.yaml", FANOUT)
    path = write(tmp_path, "f.suite.yaml", """\
        graph: fanout.yaml
        stubs:
          left: {body: {side: l}}
          right: {echo: true}
        cases:
          - name: both
            request: {body: {x: 1}}
            expect:
              body: {left: {side: l}, right: {x: 1}}
              ordered: false
              calls:
                - {service: right, body: {x: 1}}
                - left
          - name: left twice expected
            expect:
              ordered: false
              calls: [left, left, right]
    """)
    both, twice = await run_all(path)
    assert both.outcome == "passed", failures(both)
    assert twice.outcome == "failed"
    assert "expected 2 call(s) to 'left', got 1" in failures(twice)


async def test_call_body_and_headers_are_checked(tmp_path: Path) -> None:
    """A call's body, GJSON paths and headers are compared with what the stub received."""
    path = rag_suite(tmp_path, extra="propagateHeaders: X-Request-Id\n", cases="""\
        - name: headers
          request:
            body: {q: 1}
            headers: {X-Request-Id: r-1, X-Other: nope}
          expect:
            calls:
              - service: bge-embedder
                body: {q: 2}
                headers: {X-Request-Id: r-1, X-Other: nope}
              - service: vector-search
                paths: {embedding.0: 5}
              - qwen-llm
    """)
    (result,) = await run_all(path)
    text = failures(result)
    assert "expect.calls[0].body: at 'q': expected 2, got 1" in text
    assert "expect.calls[0].headers.X-Other: got no such header, expected 'nope'" in text
    assert "X-Request-Id" not in text
    assert "expect.calls[1].paths['embedding.0']: 'embedding.0' is 1, expected 5" in text
    assert result.calls[0].header("x-request-id") == ["r-1"]


# ---------------------------------------------------------------------- stub behaviour


async def test_sequence_answers_in_order_and_reports_running_out(tmp_path: Path) -> None:
    """A sequence stub gives its answers in call order; a call past the last fails the case."""
    write(tmp_path, "twice.yaml", TWICE)
    path = write(tmp_path, "s.suite.yaml", """\
        graph: twice.yaml
        stubs:
          counter:
            sequence:
              - {body: {n: 1}}
              - {status: 201, body: {n: 2}}
        cases:
          - name: two answers
            request: {body: {n: 0}}
            expect:
              status: 201
              body: {n: 2}
              calls:
                - {service: counter, body: {n: 0}}
                - {service: counter, body: {n: 1}}
          - name: one answer only
            stubs: {counter: {sequence: [{body: {n: 1}}]}}
            expect: {status: 500}
    """)
    two, one = await run_all(path)
    assert two.outcome == "passed", failures(two)
    assert one.outcome == "failed"
    assert "stub 'counter' was called 2 times; its sequence has 1 answers" in failures(one)


async def test_reset_and_refuse_fail_the_step(tmp_path: Path) -> None:
    """fail: reset drops the connection and fail: refuse points at a closed port: both fail the graph."""
    path = rag_suite(tmp_path, """\
        - name: reset
          stubs: {vector-search: {fail: reset}}
          expect: {status: 500, calls: [bge-embedder, vector-search]}
        - name: refuse
          stubs: {vector-search: {fail: refuse}}
          expect: {status: 500, calls: [bge-embedder]}
    """)
    reset, refuse = await run_all(path)
    assert reset.outcome == "passed", failures(reset)
    assert refuse.outcome == "passed", failures(refuse)
    # The cause is free text (the upstream client words it); it names the failing call.
    assert b"/vector-search failed" in reset.body
    assert b"/vector-search failed" in refuse.body


async def test_delay_beyond_the_case_timeout_is_an_error(tmp_path: Path) -> None:
    """A stub slower than the case's timeout ends the case as an error, quickly."""
    path = rag_suite(tmp_path, """\
        - name: slow
          timeout: 0.2
          stubs: {qwen-llm: {delay: 5, body: {}}}
    """)
    (result,) = await run_all(path)
    assert result.outcome == "error"
    assert result.seconds < 2
    assert "the graph did not answer within 0.2s" in failures(result)
    assert [c.service for c in result.calls] == ["bge-embedder", "vector-search", "qwen-llm"]


async def test_delay_meets_the_graph_service_client_timeout(tmp_path: Path) -> None:
    """A delayed stub beyond routerTimeouts.serviceClient fails the step as in a cluster."""
    graph = write(tmp_path, "slow.yaml", TWICE.replace("  nodes:", "  routerTimeouts: {serviceClient: 1}\n  nodes:"))
    path = write(tmp_path, "d.suite.yaml", f"""\
        graph: {graph.name}
        stubs:
          counter: {{delay: 1.5, body: {{}}}}
        cases:
          - name: too slow
            expect:
              status: 500
              paths: {{error: Failed to process request}}
    """)
    (result,) = await run_all(path)
    assert result.outcome == "passed", failures(result)
    assert b"timed out" in result.body


async def test_echo_and_text_answers(tmp_path: Path) -> None:
    """echo answers with the request body; text answers with raw text and that is what the graph returns."""
    path = rag_suite(tmp_path, """\
        - name: echo
          stubs: {bge-embedder: {echo: true}, vector-search: {echo: true}, qwen-llm: {echo: true}}
          request: {text: "not json"}
          expect: {text: "not json"}
        - name: text
          stubs: {qwen-llm: {text: "plain words", status: 202}}
          expect: {status: 202, text: "plain words"}
    """)
    echo, text = await run_all(path)
    assert echo.outcome == "passed", failures(echo)
    assert text.outcome == "passed", failures(text)


async def test_splitter_draws_pick_the_route(tmp_path: Path) -> None:
    """splitterDraws fixes the Splitter's random draw, so each route can be tested."""
    write(tmp_path, "split.yaml", SPLIT)
    path = write(tmp_path, "sp.suite.yaml", """\
        graph: split.yaml
        stubs:
          main: {body: {route: main}}
          canary: {body: {route: canary}}
        cases:
          - {name: low draw, splitterDraws: [79], expect: {body: {route: main}, calls: [main]}}
          - {name: high draw, splitterDraws: [80], expect: {body: {route: canary}, calls: [canary]}}
    """)
    low, high = await run_all(path)
    assert low.outcome == "passed", failures(low)
    assert high.outcome == "passed", failures(high)
    assert {"node": "root", "draw": 80, "step": "canary"} in high.explain


async def test_stub_keyed_by_service_url(tmp_path: Path) -> None:
    """A step that has only a serviceUrl (a resolved graph) is stubbed by naming that URL."""
    write(tmp_path, "url.yaml", """\
        spec:
          nodes:
            root:
              routerType: Sequence
              steps: [{serviceUrl: "http://model.default.svc.cluster.local/v1/models/m:predict"}]
    """)
    path = write(tmp_path, "u.suite.yaml", """\
        graph: url.yaml
        stubs:
          "http://model.default.svc.cluster.local/v1/models/m:predict": {body: {ok: true}}
        cases:
          - name: stubbed url
            expect: {body: {ok: true}, calls: ["http://model.default.svc.cluster.local/v1/models/m:predict"]}
    """)
    (result,) = await run_all(path)
    assert result.outcome == "passed", failures(result)


async def test_a_stub_entry_may_be_a_real_url(tmp_path: Path, start_service: Any) -> None:
    """A stub given as a URL string calls that real service instead of a stub."""
    real = await start_service({"/predict": (200, {"answer": "from a real service"})})
    path = rag_suite(tmp_path, f"""\
        - name: real llm
          stubs: {{qwen-llm: "{real.url('/predict')}"}}
          expect: {{paths: {{answer: from a real service}}, calls: [bge-embedder, vector-search]}}
    """)
    (result,) = await run_all(path)
    assert result.outcome == "passed", failures(result)
    assert real.received[0].json() == {"passages": ["a", "b"]}


# ----------------------------------------------------------------------- load errors


def test_shape_errors_name_file_line_field_and_expected(tmp_path: Path) -> None:
    """Typos, missing fields and wrong types are each reported with file, line, field and what is expected."""
    path = rag_suite(tmp_path, """\
        - request: {body: {}}
          expect:
            stauts: 200
        - name: typed
          expect: {status: "ok"}
    """, stubs="stubs:\n  bge-embedder: {bdy: {}}\n")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    lines = str(info.value).splitlines()
    assert lines[0].endswith(
        "t.suite.yaml:3: stubs.bge-embedder.bdy: unknown field (expected one of: status, body, text, echo, "
        "headers, delay, fail, sequence, url); did you mean 'body'?"
    )
    assert any(line.endswith("t.suite.yaml:5: cases[0].name: required field is missing") for line in lines)
    assert any("t.suite.yaml:7: cases[0].expect.stauts: unknown field" in line and "did you mean 'status'?" in line
               for line in lines)
    assert any("t.suite.yaml:9: cases[1].expect.status: Input should be a valid integer" in line for line in lines)


def test_unknown_service_names_are_refused_with_a_suggestion(tmp_path: Path) -> None:
    """Stubs and expected calls must name a service the graph calls; close names are suggested."""
    path = rag_suite(tmp_path, """\
        - name: typo
          expect:
            calls: [vectr-search]
    """, stubs="stubs:\n  qwen: {body: {}}\n")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    text = str(info.value)
    assert "t.suite.yaml:3: stubs.qwen: 'qwen' is not a service the graph calls (expected one of: " \
           "bge-embedder, qwen-llm, vector-search); did you mean 'qwen-llm'?" in text
    assert "t.suite.yaml:7: cases[0].expect.calls[0].service: 'vectr-search'" in text
    assert "did you mean 'vector-search'?" in text


def test_invalid_gjson_path_is_refused(tmp_path: Path) -> None:
    """An expectation path that is not GJSON is a load error at its line."""
    path = rag_suite(tmp_path, "- name: bad path\n  expect:\n    paths: {'a.#(': 1}\n")
    with pytest.raises(SuiteError, match=r"t\.suite\.yaml:\d+: cases\[0\]\.expect: 'a\.#\(' is not a GJSON path"):
        load_suite(path)


def test_conflicting_stub_fields_are_refused(tmp_path: Path) -> None:
    """A stub that both echoes and has a body, or a sequence beside a status, is refused."""
    path = rag_suite(tmp_path, "- name: x\n", stubs="""\
stubs:
  bge-embedder: {echo: true, body: {}}
  vector-search: {status: 500, sequence: [{body: 1}]}
""")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    text = str(info.value)
    assert "t.suite.yaml:3: stubs.bge-embedder: give only one of body, text, echo, fail (got body, echo)" in text
    assert "t.suite.yaml:4: stubs.vector-search: sequence stands alone: move status into it or drop it" in text


def test_refuse_inside_a_sequence_is_refused(tmp_path: Path) -> None:
    """A connection already accepted cannot be refused, so fail: refuse in a sequence is a load error."""
    path = rag_suite(tmp_path, "- name: x\n", stubs="stubs:\n  qwen-llm: {sequence: [{body: 1}, {fail: refuse}]}\n")
    with pytest.raises(SuiteError, match=r"t\.suite\.yaml:3: stubs\.qwen-llm: fail: refuse is for a whole stub"):
        load_suite(path)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    """Broken YAML is reported with its line, not a traceback."""
    path = write(tmp_path, "y.suite.yaml", "graph: x.yaml\ncases:\n  - name: [unclosed\n")
    with pytest.raises(SuiteError, match=r"y\.suite\.yaml:4: not valid YAML"):
        load_suite(path)


def test_graph_problems_are_reported_through_the_suite(tmp_path: Path) -> None:
    """A suite whose graph is missing or invalid says so at its graph: line, with the graph's own message."""
    write(tmp_path, "broken.yaml", "spec:\n  nodes:\n    start: {routerType: Sequence, steps: [{serviceName: a}]}\n")
    path = write(tmp_path, "g.suite.yaml", "# comment\ngraph: broken.yaml\ncases: [{name: a}]\n")
    with pytest.raises(SuiteError) as info:
        load_suite(path)
    assert "g.suite.yaml:2: graph: " in str(info.value)
    assert "no node named 'root'" in str(info.value)
    missing = write(tmp_path, "m.suite.yaml", "graph: nowhere.yaml\ncases: [{name: a}]\n")
    with pytest.raises(SuiteError, match=r"m\.suite\.yaml:1: graph: .*nowhere\.yaml cannot be used"):
        load_suite(missing)


def test_services_file_maps_names_to_urls_or_stubs(tmp_path: Path) -> None:
    """A services file accepts a URL string or a stub per name, and reports mistakes by line."""
    good = write(tmp_path, "s.yaml", "a: http://127.0.0.1:9/x\nb: {body: {ok: true}}\n")
    services = load_services(good)
    assert services["a"].url == "http://127.0.0.1:9/x" and not services["a"].is_stub
    assert services["b"].is_stub and services["b"].body == {"ok": True}
    bad = write(tmp_path, "b.yaml", "a: ftp://x\nb:\n  stauts: 200\n")
    with pytest.raises(SuiteError) as info:
        load_services(bad)
    assert "b.yaml:1: a: url 'ftp://x' is not an http(s) URL" in str(info.value)
    assert "b.yaml:3: b.stauts: unknown field" in str(info.value)


def test_first_difference_points_at_the_path() -> None:
    """Body comparison reports the first differing path, and never equates true with 1."""
    assert first_difference({"a": [1, {"b": 2}]}, {"a": [1, {"b": 3}]}) == "at 'a.1.b': expected 2, got 3"
    assert first_difference([1, 2], [1]) == "the body: expected 2 item(s), got 1: [1]"
    assert first_difference({"x": 1}, {"x": 1, "y": 2}) == "the body: unexpected key 'y' (it is 2)"
    assert first_difference({"x": True}, {"x": 1}) == "at 'x': expected true, got 1"
    assert first_difference({"x": 1}, {"x": 1.0}) is None
