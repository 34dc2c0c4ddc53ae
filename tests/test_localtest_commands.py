"""The local-testing commands as users run them: ``run``, ``graph``, ``test`` and the pytest plugin."""

from __future__ import annotations

import asyncio
import gzip
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pydot
import pytest
from aiohttp import web

from graph_router.cli import main
from graph_router.localtest import assert_suite_passes

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "config" / "samples"
CHAIN = SAMPLES / "classic-v1-chain.yaml"
RAG = Path(__file__).resolve().parent / "graphs" / "kserve-rag.yaml"  # plain KServe semantics

EVERY_KIND = """\
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata: {name: every-kind}
spec:
  nodes:
    root:
      routerType: Sequence
      steps:
        - {name: fan, nodeName: fan}
        - {name: pick, nodeName: pick, data: $response, dependency: Hard}
    fan:
      routerType: Ensemble
      steps:
        - {name: a, serviceName: model-a}
        - {name: b, serviceName: model-b}
    pick:
      routerType: Switch
      steps:
        - {name: small, nodeName: split, condition: 'a.#(size<"10")'}
        - {name: big, serviceUrl: "http://big.default.svc/v1/models/big:predict", condition: b}
    split:
      routerType: Splitter
      steps:
        - {name: stable, serviceName: model-a, weight: 90}
        - {name: canary, serviceName: model-b, weight: 10}
"""

FAILING_SUITE = f"""\
graph: {RAG}
stubs:
  bge-embedder: {{body: {{embedding: [1]}}}}
  vector-search: {{body: {{passages: []}}}}
  qwen-llm: {{body: {{answer: Paris}}}}
cases:
  - name: passes
    expect: {{body: {{answer: Paris}}}}
  - name: wrong answer
    expect: {{paths: {{answer: Lyon}}}}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ test


def test_test_command_passes_the_samples_and_writes_junit(tmp_path: Path, capsys: Any) -> None:
    """`graph-router test DIR` runs every sample suite, exits 0 and writes a JUnit report CI can read."""
    junit = tmp_path / "report.xml"
    assert main(["test", str(SAMPLES), "--junit", str(junit)]) == 0
    out = capsys.readouterr().out
    assert "rag-pipeline.suite.yaml ......" in out
    assert "classic-v1-chain.suite.yaml ....." in out
    assert " 11 passed in " in out
    root = ET.parse(junit).getroot()
    assert (root.tag, root.get("tests"), root.get("failures"), root.get("errors")) == ("testsuites", "11", "0", "0")
    names = {s.get("name") for s in root.iter("testsuite")}
    assert names == {"rag-pipeline", "classic-v1-chain"}


def test_test_command_fails_like_pytest(tmp_path: Path, capsys: Any) -> None:
    """A wrong expectation makes the run exit 1 with a failures section, a short summary and a JUnit failure."""
    suite = write(tmp_path, "bad.suite.yaml", FAILING_SUITE)
    junit = tmp_path / "report.xml"
    assert main(["test", str(suite), "--junit", str(junit)]) == 1
    out = capsys.readouterr().out
    assert "bad.suite.yaml .F\n" in out
    assert "= FAILURES =" in out
    assert "bad.suite.yaml:10: expect.paths.answer: 'answer' is \"Paris\", expected \"Lyon\"" in out
    assert "path taken:\n  node root (Sequence)\n    step embed -> bge-embedder: 200" in out
    assert "calls received:\n  #1 bge-embedder POST /bge-embedder (empty body)" in out
    assert f"FAILED {suite}::wrong answer - {suite}:10: expect.paths.answer" in out
    assert " 1 failed, 1 passed in " in out
    failure = ET.parse(junit).getroot().find("./testsuite/testcase[@name='wrong answer']/failure")
    assert failure is not None
    assert "expected \"Lyon\"" in failure.get("message", "")


def test_test_command_reports_broken_suites_and_empty_runs(tmp_path: Path, capsys: Any) -> None:
    """A suite that does not load is an error (exit 1); a directory without suites exits 5."""
    broken = write(tmp_path, "broken.suite.yaml", f"graph: {RAG}\ncases:\n  - name: x\n    expect: {{stauts: 200}}\n")
    assert main(["test", str(broken)]) == 1
    out = capsys.readouterr().out
    assert f"{broken}:4: cases[0].expect.stauts: unknown field" in out
    assert "did you mean 'status'?" in out
    assert " 1 error in " in out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["test", str(empty)]) == 5
    assert "no *.suite.yaml found" in capsys.readouterr().err


def test_test_command_keyword_and_verbose(tmp_path: Path, capsys: Any) -> None:
    """-k runs only the cases whose name contains the text; -v prints one line per case."""
    suite = write(tmp_path, "k.suite.yaml", FAILING_SUITE)
    assert main(["test", str(suite), "-k", "passes", "-v"]) == 0
    out = capsys.readouterr().out
    assert f"{suite}::passes PASSED" in out
    assert "wrong answer" not in out
    assert main(["test", str(suite), "-k", "no such case"]) == 5
    assert "no cases ran" in capsys.readouterr().out


# ------------------------------------------------------------------------------- run


def test_run_with_a_services_file_of_stubs_prints_answer_and_path(tmp_path: Path, capsys: Any) -> None:
    """`run --services FILE --explain` answers from stubs, prints the body and, on stderr, the path taken."""
    services = write(tmp_path, "services.yaml", """\
        preprocessor: {body: {predictions: [{kind: dog}]}}
        cat-classifier: {body: {predictions: [tabby]}}
        dog-classifier: {echo: true}
    """)
    code = main(["run", str(CHAIN), "--services", str(services), "--data", '{"instances": [1]}', "--explain"])
    out, err = capsys.readouterr()
    assert code == 0
    assert out == '{"instances":[{"kind":"dog"}]}\n'
    assert "node pick-model (Switch)" in err
    assert 'condition instances.#(kind=="cat") on step cats: no match' in err
    assert 'condition instances.#(kind=="dog") on step dogs: matched' in err
    assert "step dogs -> dog-classifier: 200" in err
    assert '#1 preprocessor POST /preprocessor {"instances": [1]}' in err
    assert "answer: 200 in " in err


async def test_run_calls_real_services_given_by_flag(tmp_path: Path, capsys: Any, start_service: Any) -> None:
    """`run --service NAME=URL` calls that URL, and the flag wins over the services file."""
    real = await start_service({"/llm": (200, {"answer": "real"})})
    services = write(tmp_path, "services.yaml", """\
        bge-embedder: {body: {e: 1}}
        vector-search: {echo: true}
        qwen-llm: {body: {answer: stub}}
    """)
    args = ["run", str(RAG), "--services", str(services), "--service", f"qwen-llm={real.url('/llm')}", "-d", "{}"]
    code = await asyncio.to_thread(main, args)
    assert code == 0
    assert capsys.readouterr().out == '{"answer":"real"}\n'
    assert real.received[0].body == b'{"e":1}'


async def test_run_prints_a_compressed_answer_decoded(tmp_path: Path, capsys: Any, start_service: Any) -> None:
    """`run` prints what a gzip-encoded final answer says, not its compressed bytes."""
    async def gzipped(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(b'{"answer":"zipped"}'), content_type="application/json",
                            headers={"Content-Encoding": "gzip"})

    real = await start_service({"/llm": gzipped})
    services = write(tmp_path, "services.yaml", """\
        bge-embedder: {body: {e: 1}}
        vector-search: {echo: true}
    """)
    args = ["run", str(RAG), "--services", str(services), "--service", f"qwen-llm={real.url('/llm')}", "-d", "{}"]
    code = await asyncio.to_thread(main, args)
    assert code == 0
    assert capsys.readouterr().out == '{"answer":"zipped"}\n'


def test_run_failure_prints_the_error_body_and_exits_1(tmp_path: Path, capsys: Any) -> None:
    """A graph that fails prints KServe's error body and exits 1."""
    services = write(tmp_path, "services.yaml", """\
        preprocessor: {body: {predictions: [{kind: parrot}]}}
        cat-classifier: {body: {}}
        dog-classifier: {body: {}}
    """)
    data = write(tmp_path, "request.json", '{"instances": [{"image": "p.jpg"}]}')
    assert main(["run", str(CHAIN), "--services", str(services), "--data", f"@{data}"]) == 1
    out = capsys.readouterr().out
    assert out == (
        '{"error":"Failed to process request","cause":"None of the routes matched with the switch condition"}\n'
    )


def test_run_without_a_url_for_a_service_says_which_flag_to_add(capsys: Any) -> None:
    """A serviceName left unresolved is refused before anything runs, naming the --service flag to add."""
    assert main(["run", str(RAG), "--service", "bge-embedder=http://127.0.0.1:9/x", "-d", "{}"]) == 1
    err = capsys.readouterr().err
    assert "serviceName 'qwen-llm' has no URL" in err
    assert "--service qwen-llm=URL" in err


def test_run_reports_a_bad_services_file_by_line(tmp_path: Path, capsys: Any) -> None:
    """A services file with a mistake is reported with its file, line and field."""
    services = write(tmp_path, "services.yaml", "preprocessor:\n  bodyy: {}\n")
    assert main(["run", str(CHAIN), "--services", str(services), "-d", "{}"]) == 1
    assert f"{services}:2: preprocessor.bodyy: unknown field" in capsys.readouterr().err


# ----------------------------------------------------------------------------- graph


def test_graph_mermaid_shows_kinds_conditions_weights_and_dependencies(tmp_path: Path, capsys: Any) -> None:
    """The Mermaid drawing names every node's kind, Switch conditions, Splitter weights, Hard steps and links."""
    graph = write(tmp_path, "every.yaml", EVERY_KIND)
    assert main(["graph", str(graph), "--format", "mermaid"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("---\ntitle: every-kind\n---\nflowchart TD\n")
    for kind in ("Sequence", "Ensemble", "Switch", "Splitter"):
        assert f"<br/>{kind}" in out
    assert 'n2 -->|"1. if a.#35;(size#lt;#quot;10#quot;)"| n2s0' in out
    assert 'n3 -->|"90%"| n3s0' in out and 'n3 -->|"10%"| n3s1' in out
    assert 'n0s0 -->|"$response"| n0s1' in out
    assert 'n0s1 -.->|"runs"| n2' in out
    assert "class n0s1 hard" in out
    assert 'n1 -->|"in parallel"| n1s0' in out


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydot's own use of older pyparsing names
def test_graph_dot_is_valid_graphviz(tmp_path: Path) -> None:
    """The dot drawing parses as Graphviz, with conditions quoted and Hard steps highlighted."""
    graph = write(tmp_path, "every.yaml", EVERY_KIND)
    out = tmp_path / "every.dot"
    assert main(["graph", str(graph), "-f", "dot", "-o", str(out)]) == 0
    (parsed,) = pydot.graph_from_dot_data(out.read_text())
    assert parsed.get_name() == '"every-kind"'
    edges = {(e.get_source(), e.get_destination()): e.get_label() for e in parsed.get_edges()}
    assert edges[("n2", "n2s0")] == '"1. if a.#(size<\\"10\\")"'
    assert edges[("n3", "n3s1")] == '"10%"'
    hard = parsed.get_node("n0s1")[0]
    assert hard.get("penwidth") == "3"


def test_graph_refuses_an_invalid_graph(tmp_path: Path, capsys: Any) -> None:
    """Drawing a graph that cannot run fails with the graph's problems rather than a misleading picture."""
    graph = write(tmp_path, "bad.yaml", "spec:\n  nodes:\n    root: {routerType: Switch, steps: [{serviceName: a}]}\n")
    assert main(["graph", str(graph)]) == 1
    assert "a Switch step needs a condition" in capsys.readouterr().err


# ---------------------------------------------------------------------------- pytest


def test_pytest_plugin_collects_suites_and_reports_failures(tmp_path: Path) -> None:
    """Under pytest with the plugin, each case is a test; a failing case fails pytest with the same details."""
    write(tmp_path, "bad.suite.yaml", FAILING_SUITE)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "graph_router.localtest.pytest_plugin", "-p", "no:cacheprovider",
         "-q", "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env, check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "bad.suite.yaml:10: expect.paths.answer: 'answer' is \"Paris\", expected \"Lyon\"" in proc.stdout
    assert "1 failed, 1 passed" in proc.stdout


def test_assert_suite_passes_for_plain_test_functions(tmp_path: Path) -> None:
    """assert_suite_passes returns for a passing suite and raises with every failure for a failing one."""
    result = assert_suite_passes(SAMPLES / "rag-pipeline.suite.yaml")
    assert len(result.cases) == 6
    bad = write(tmp_path, "bad.suite.yaml", FAILING_SUITE)
    with pytest.raises(AssertionError, match=r"expect\.paths\.answer: 'answer' is \"Paris\", expected \"Lyon\""):
        assert_suite_passes(bad)
