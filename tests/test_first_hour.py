"""A new user's first hour (issue 13): every mistake in a graph file is caught with file and line,
and every command says plainly what went wrong.

Commands run as users run them: ``main([...])`` in process (in a thread when a loopback
service must answer at the same time), or ``python -m graph_router`` for ``serve``.
"""

from __future__ import annotations

import asyncio
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from conftest import Service, echo

from graph_router.cli import build_parser, main
from graph_router.errors import GraphError
from graph_router.loader import load_graph_json, load_graph_text
from graph_router.plan import compile_graph
from graph_router.validation import never_matches

ROOT = Path(__file__).resolve().parents[1]
CHAIN = ROOT / "config" / "samples" / "classic-v1-chain.yaml"
ENV = {**os.environ, "GRAPH_ROUTER_PURE_PYTHON": os.environ.get("GRAPH_ROUTER_PURE_PYTHON", "")}

TYPOS = """\
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata:
  name: typos
spec:
  routerTimeout: {serverRead: 5}
  nodes:
    root:
      routerType: Sequence
      steps:
        - serviceUrl: http://a.example/
          dependancy: Hard
        - serviceUrl: http://b.example/
          conditon: predictions
    other:
      routerType: Ensemble
      step:
        - serviceUrl: http://c.example/
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_step(step: str, extra: str = "") -> str:
    return f"""\
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata: {{name: g}}
spec:
  nodes:
    root:
      routerType: Sequence
      steps:
        - {step}
{extra}"""


# ------------------------------------------------------------------ 1-6: graph files


def test_unknown_fields_are_errors_naming_file_line_and_the_close_field(tmp_path: Path, capsys: Any) -> None:
    """Misspelt fields fail `validate`, each with its line and a "did you mean"; nothing says OK."""
    path = write(tmp_path, "typos.yaml", TYPOS)
    assert main(["validate", str(path)]) == 1
    captured = capsys.readouterr()
    assert "OK" not in captured.out
    err = captured.err
    assert f"{path}:6: spec.routerTimeout: unknown field" in err and "did you mean 'routerTimeouts'?" in err
    assert f"{path}:12: spec.nodes.root.steps[0].dependancy: unknown field" in err
    assert "did you mean 'dependency'?" in err
    assert f"{path}:14: spec.nodes.root.steps[1].conditon: unknown field" in err
    assert "did you mean 'condition'?" in err
    assert f"{path}:17: spec.nodes.other.step: unknown field (expected one of: routerType, steps)" in err
    assert "did you mean 'steps'?" in err


def test_spec_node_instead_of_nodes_is_named(tmp_path: Path, capsys: Any) -> None:
    """`spec.node:` is an unknown field with the right name suggested, not just "no root"."""
    path = write(tmp_path, "g.yaml", "spec:\n  node:\n    root: {routerType: Sequence, steps: [{serviceUrl: 'http://a/'}]}\n")
    assert main(["validate", str(path)]) == 1
    assert f"{path}:2: spec.node: unknown field" in capsys.readouterr().err


def test_graph_json_stays_lenient_about_unknown_fields(caplog: Any) -> None:
    """--graph-json (KServe's controller, maybe newer than us) warns about an unknown field and serves."""
    spec = {"nodes": {"root": {"routerType": "Sequence", "newKServeField": 1,
                               "steps": [{"serviceUrl": "http://a/", "futureThing": True}]}}}
    plan = compile_graph(load_graph_json(orjson.dumps(spec).decode()))
    assert plan.root.steps[0].url == "http://a/"
    text = caplog.text
    assert "nodes.root.newKServeField: unknown field" in text
    assert "nodes.root.steps[0].futureThing: unknown field" in text and "(ignored)" in text


def test_data_is_request_or_response(tmp_path: Path, capsys: Any) -> None:
    """`data: $respose` is an error with the right value suggested (it used to mean $request)."""
    steps = "{serviceUrl: 'http://a/'}\n        - {serviceUrl: 'http://b/', data: $respose}"
    path = write(tmp_path, "g.yaml", one_step(steps))
    assert main(["validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:10: node 'root' step 1: data '$respose' is neither $request nor $response" in err
    assert "did you mean '$response'?" in err


def test_a_step_names_exactly_one_target_in_files_but_not_in_graph_json(tmp_path: Path, capsys: Any) -> None:
    """serviceName beside serviceUrl: refused in a file (validate, run, serve --graph), accepted from KServe."""
    step = "{serviceName: m, serviceUrl: 'http://m.example/'}"
    path = write(tmp_path, "g.yaml", one_step(step))
    assert main(["validate", str(path)]) == 1
    assert f"{path}:9: node 'root' step 0: names serviceName and serviceUrl" in capsys.readouterr().err
    assert main(["run", str(path), "--data", "{}"]) == 1
    assert "names serviceName and serviceUrl" in capsys.readouterr().err
    proc = subprocess.run([sys.executable, "-m", "graph_router", "serve", "--graph", str(path), "--host",
                           "127.0.0.1", "--port", str(free_port())], capture_output=True, timeout=30, env=ENV)
    assert proc.returncode == 1 and b"names serviceName and serviceUrl" in proc.stderr
    spec = {"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceName": "m", "serviceUrl": "http://m.example/"}]}}}
    assert compile_graph(load_graph_json(orjson.dumps(spec).decode())).root.steps[0].url == "http://m.example/"


SEMANTIC = """\
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata: {name: semantic}
spec:
  nodes:
    root:
      routerType: Sequence
      steps:
        - nodeName: pick-modle
        - nodeName: loop
    pick-model:
      routerType: Switch
      steps:
        - serviceUrl: http://a.example/
        - serviceUrl: http://b.example/
          condition: 'a.#(b==1'
    loop:
      routerType: Sequence
      steps:
        - nodeName: loop
"""


@pytest.mark.parametrize("command", ["validate", "run", "graph"])
def test_semantic_errors_name_file_and_line_in_every_command(tmp_path: Path, capsys: Any, command: str) -> None:
    """A missing node (with the close name), a Switch step without condition, bad GJSON and a cycle, located."""
    path = write(tmp_path, "semantic.yaml", SEMANTIC)
    assert main([command, str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:9: node 'root' step 0: nodeName 'pick-modle' is not a node of this graph; " \
           "did you mean 'pick-model'?" in err
    assert f"{path}:14: node 'pick-model' step 0: a Switch step needs a condition" in err
    assert f"{path}:16: node 'pick-model' step 1: condition 'a.#(b==1' is not valid GJSON" in err
    assert f"{path}:20: nodeName cycle: 'loop' -> 'loop'" in err


def test_a_condition_that_never_matches_warns_with_the_form_that_works(tmp_path: Path, capsys: Any) -> None:
    """`lang=="fr"` is a key lookup; validate warns and shows `[@this].#(lang=="fr")`, which does match."""
    path = write(tmp_path, "g.yaml", """\
        spec:
          nodes:
            root:
              routerType: Switch
              steps:
                - {serviceUrl: 'http://fr.example/', condition: 'lang=="fr"'}
        """)
    assert main(["validate", str(path)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {path}:6: node 'root' step 0: condition 'lang==\"fr\"' never matches a JSON object" in err
    assert "'[@this].#(lang==\"fr\")'" in err
    from graph_router import gjson

    assert not gjson.compile_path('lang=="fr"').get(b'{"lang": "fr"}').exists
    assert gjson.compile_path('[@this].#(lang=="fr")').get(b'{"lang": "fr"}').exists
    assert never_matches('[@this].#(lang=="fr")') is None
    assert never_matches('instances.#(kind=="cat")') is None
    assert never_matches("predictions.0.label") is None
    assert "'instances.#(kind==\"cat\")' when instances is an array" in (never_matches('instances.kind=="cat"') or "")


def test_a_json_graph_with_a_trailing_comma_is_a_syntax_error(tmp_path: Path, capsys: Any) -> None:
    """YAML would accept it; a .json file must be JSON, and the error says where."""
    path = tmp_path / "g.json"
    path.write_text('{"nodes": {"root": {"routerType": "Sequence",\n "steps": [{"serviceUrl": "http://a/"},]}}}')
    assert main(["validate", str(path)]) == 1
    assert f"{path}:2:" in (err := capsys.readouterr().err) and "not valid JSON" in err
    with pytest.raises(GraphError, match="not valid JSON"):
        load_graph_text(path.read_text(), origin=str(path))


# -------------------------------------------------------------------- 7-8: stopping


def _serve(*args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "graph_router", "serve", *args], env=ENV, **kwargs)


def _graph_file(tmp_path: Path, url: str = "http://127.0.0.1:9/m") -> Path:
    return write(tmp_path, "g.yaml", one_step(f"{{serviceUrl: '{url}'}}"))


def _wait_ready(port: int, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("router did not become ready")


def _readyz(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return s.recv(100)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_during_the_drain_stops_at_once(tmp_path: Path, sig: signal.Signals) -> None:
    """With a 30 s drain, the first signal turns /readyz to 503; the second stops the router right away."""
    port = free_port()
    proc = _serve(str(_graph_file(tmp_path)), "--host", "127.0.0.1", "--port", str(port), "--drain-seconds", "30",
                  stderr=subprocess.DEVNULL)
    try:
        _wait_ready(port)
        proc.send_signal(sig)
        time.sleep(0.5)
        assert _readyz(port).startswith(b"HTTP/1.1 503")
        assert proc.poll() is None  # still draining
        started = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.timeout(60)
def test_serve_at_a_terminal_says_once_that_it_drains_and_how_to_skip_it(tmp_path: Path) -> None:
    """stderr a terminal: one line on the first signal, naming Ctrl-C and --drain-seconds 0."""
    port = free_port()
    master, slave = pty.openpty()
    proc = _serve(str(_graph_file(tmp_path)), "--host", "127.0.0.1", "--port", str(port), "--drain-seconds", "30",
                  "--log-level", "WARNING", stderr=slave)
    os.close(slave)
    out = b""
    try:
        _wait_ready(port)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        while select.select([master], [], [], 0.5)[0]:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    text = out.decode()
    assert text.count("draining for 30s") == 1, text
    assert "press Ctrl-C again to stop now" in text and "--drain-seconds 0" in text


@pytest.mark.timeout(60)
def test_workers_on_a_taken_port_exit_1_with_one_line(tmp_path: Path) -> None:
    """--workers 3 on a port in use: exit 1 with the one-worker message, once, instead of restarting forever."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = [str(_graph_file(tmp_path)), "--host", "127.0.0.1", "--port", str(port)]
        single = subprocess.run([sys.executable, "-m", "graph_router", "serve", *args], capture_output=True,
                                timeout=30, env=ENV)
        started = time.monotonic()
        multi = subprocess.run([sys.executable, "-m", "graph_router", "serve", *args, "--workers", "3"],
                               capture_output=True, timeout=40, env=ENV)
    assert single.returncode == 1
    assert multi.returncode == 1
    assert time.monotonic() - started < 20
    lines = multi.stderr.decode().strip().splitlines()
    assert lines == single.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "cannot listen on 127.0.0.1" in lines[0]


# ----------------------------------------------------------------- 9-14: arguments


@pytest.mark.parametrize("port", ["0", "70000", "-1", "http"])
def test_port_outside_the_range_is_an_argument_error(port: str, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["serve", str(CHAIN), "--port", port])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: graph-router serve") and "argument --port" in err


@pytest.mark.parametrize("command", ["run", "serve"])
def test_a_service_url_without_a_scheme_is_a_one_line_error(command: str, tmp_path: Path) -> None:
    """`--service NAME=host:port` is refused before anything runs, with the fix, in one line."""
    proc = subprocess.run([sys.executable, "-m", "graph_router", command, str(CHAIN), "--port" if command == "serve"
                           else "--data", "1" if command == "serve" else "{}", "--service",
                           "preprocessor=localhost:9000"], capture_output=True, timeout=30, env=ENV)
    assert proc.returncode == 1
    lines = proc.stderr.decode().strip().splitlines()
    assert lines == ["graph-router: --service preprocessor=localhost:9000: 'localhost:9000' is not an http:// or "
                     "https:// URL (did you mean http://localhost:9000?)"]


def test_a_services_file_url_without_a_scheme_is_an_error(tmp_path: Path, capsys: Any) -> None:
    services = write(tmp_path, "s.yaml", "preprocessor: localhost:9000\n")
    assert main(["run", str(CHAIN), "--services", str(services)]) == 1
    assert f"{services}:1: preprocessor" in (err := capsys.readouterr().err) and "is not an http(s) URL" in err


async def test_run_maps_a_steps_service_url_to_a_local_service(tmp_path: Path, start_service: Any,
                                                               capsys: Any) -> None:
    """`--service URL=URL` sends a serviceUrl step to a loopback service; a services file may key by URL too."""
    svc: Service = await start_service({"/local": echo})
    cluster = "http://model.models.svc.cluster.local/v1/models/m:predict"
    graph = write(tmp_path, "g.yaml", one_step(f"{{serviceUrl: '{cluster}'}}"))
    code = await asyncio.to_thread(main, ["run", str(graph), "--data", '{"x": 1}',
                                          "--service", f"{cluster}={svc.url('/local')}"])
    assert code == 0
    assert orjson.loads(capsys.readouterr().out) == {"x": 1}
    assert [r.path for r in svc.received] == ["/local"]
    services = write(tmp_path, "s.yaml", f"'{cluster}': {{body: {{stubbed: true}}}}\n")
    code = await asyncio.to_thread(main, ["run", str(graph), "--services", str(services)])
    assert code == 0
    assert orjson.loads(capsys.readouterr().out) == {"stubbed": True}


@pytest.mark.timeout(60)
async def test_serve_with_a_services_file_answers_from_its_stubs(tmp_path: Path) -> None:
    """`serve --services FILE`: a graph whose services do not run answers from stubs, over HTTP."""
    services = write(tmp_path, "s.yaml", """\
        preprocessor: {body: {predictions: [{kind: cat}]}}
        cat-classifier: {body: {predictions: [{label: tabby}]}}
        dog-classifier: {body: {predictions: [{label: beagle}]}}
        """)
    port = free_port()
    proc = _serve(str(CHAIN), "--services", str(services), "--host", "127.0.0.1", "--port", str(port),
                  "--drain-seconds", "0", stderr=subprocess.DEVNULL)
    try:
        await asyncio.to_thread(_wait_ready, port)
        async with aiohttp.ClientSession() as session, session.post(
            f"http://127.0.0.1:{port}/", json={"instances": [{"image": "cat.jpg"}]}
        ) as resp:
            assert resp.status == 200
            assert await resp.json() == {"predictions": [{"label": "tabby"}]}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_version(capsys: Any) -> None:
    from graph_router import __version__

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"graph-router {__version__}"


def test_every_subcommand_describes_itself_and_every_argument() -> None:
    """Each subcommand has a description, and every argument (--log-level included) has help text."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert isinstance(sub.choices, dict)
    for name, command in sub.choices.items():
        assert command.description, f"{name} has no description"
        for action in command._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        assert "--log-level" in command.format_help(), name


@pytest.mark.parametrize("argv", [["run"], ["test", "--junit"], ["controller", "--name", "g", "--output", "f"]])
def test_an_argument_error_prints_that_subcommands_usage(argv: list[str], capsys: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith(f"usage: graph-router {argv[0]}")


def test_controller_help_and_readme_agree_on_what_is_required(capsys: Any) -> None:
    with pytest.raises(SystemExit):
        main(["controller", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Required: --name, --output, and --namespace unless $POD_NAMESPACE is set" in out
    readme = (ROOT / "README.md").read_text()
    assert "`graph-router controller --name GRAPH --output FILE [--namespace NS]" in readme
    assert "`--namespace` defaults to `$POD_NAMESPACE`" in readme


async def test_run_data_that_is_not_json_warns_and_a_file_is_sent_as_bytes(tmp_path: Path, start_service: Any,
                                                                           capsys: Any) -> None:
    svc: Service = await start_service({"/m": (200, {"ok": True})})
    graph = _graph_file(tmp_path, svc.url("/m"))
    code = await asyncio.to_thread(main, ["run", str(graph), "--data", "{'x': 1}"])
    assert code == 0
    assert "warning: --data is not valid JSON" in capsys.readouterr().err
    raw = bytes(range(256))
    data = tmp_path / "body.bin"
    data.write_bytes(raw)
    code = await asyncio.to_thread(main, ["run", str(graph), "--data", f"@{data}"])
    assert code == 0
    assert "warning" not in capsys.readouterr().err
    assert svc.received[-1].body == raw


def test_controller_names_a_missing_kubeconfig(tmp_path: Path, capsys: Any) -> None:
    missing = tmp_path / "nope" / "config"
    code = main(["controller", "--namespace", "ns", "--name", "g", "--output", str(tmp_path / "o.json"),
                 "--kubeconfig", str(missing)])
    assert code == 1
    assert f"--kubeconfig {missing}: the file does not exist" in capsys.readouterr().err


# --------------------------------------------------------------------- 15: drawings


EXTENDED = """\
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata:
  name: extended
  annotations:
    graph-router.io/extensions: |
      deadlineSeconds: 30
      steps:
        root/embed: {request: {input: "{{ $request.q }}"}}
        root/generate:
          request: {stream: true, prompt: "{{ $response.text }}"}
          policy: {timeoutSeconds: 60, retries: 2, retryOn: [503]}
spec:
  nodes:
    root:
      routerType: Sequence
      steps:
        - {name: embed, serviceUrl: 'http://e.example/'}
        - {name: generate, serviceUrl: 'http://g.example/', data: $response}
"""


@pytest.mark.parametrize("fmt", ["mermaid", "dot"])
def test_graph_drawing_shows_extensions(tmp_path: Path, capsys: Any, fmt: str) -> None:
    """Template edges are labelled `template`; policy, streaming and the deadline are drawn."""
    path = write(tmp_path, "g.yaml", EXTENDED)
    assert main(["graph", str(path), "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert out.count('"template"') == 2
    assert "policy: timeout 60s, 2 retries on errors, 503" in out
    assert "streams to the client" in out
    assert "deadline 30s" in out


# ---------------------------------------------------------- 17: a clone on its own


def test_gjson_conformance_runs_in_a_clone_without_shared(tmp_path: Path) -> None:
    """The conformance tests and their vectors live in the repository: a copy with no ../shared passes."""
    clone = tmp_path / "clone"
    (clone / "tests" / "data").mkdir(parents=True)
    for name in ("tests/test_gjson_conformance.py", "tests/data/gjson_vectors.jsonl"):
        (clone / name).write_bytes((ROOT / name).read_bytes())
    env = {k: v for k, v in ENV.items() if k != "GRAPH_ROUTER_SHARED"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=clone,
                          capture_output=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout.decode()[-2000:]
    assert b" passed" in proc.stdout and b"skipped" not in proc.stdout


# ------------------------------------------------------------------- 5, 18: README


README = (ROOT / "README.md").read_text()


def _code_blocks(text: str) -> list[str]:
    return [block.split("\n", 1)[1] for block in text.split("```")[1::2] if "\n" in block]


def test_readme_conditions_are_ones_that_can_match() -> None:
    """Every condition the README shows (explain example, graph, table) is one that can match."""
    import re

    shown = re.findall(r'"condition":"((?:[^"\\]|\\.)*)"', README)
    shown += re.findall(r"condition: '([^']*)'", README)
    shown += re.findall(r"\| `([^`|]*#\([^`|]*)` \|", README)
    assert len(shown) >= 5
    for condition in shown:
        condition = condition.replace('\\"', '"')
        assert never_matches(condition) is None, condition
    assert "### Conditions on top-level fields" in README


def test_readme_local_commands_are_ready_to_paste() -> None:
    """.venv is activated before the first bare command, local serve lines stay on loopback, and the
    demo's question is shown with curl, streaming."""
    first_command = README.index("graph-router serve config/samples/classic-v1-chain.yaml")
    assert README.index(". .venv/bin/activate") < first_command
    assert ".venv/bin/graph-router" in README[:first_command]
    serve_lines = [line for block in _code_blocks(README) for line in block.splitlines()
                   if "graph-router serve" in line and "/graph/graph.json" not in line]
    assert serve_lines
    for line in serve_lines:
        joined = line if "--host" in line else README[README.index(line):README.index(line) + 400]
        assert "--host 127.0.0.1" in joined, line
    assert "--drain-seconds 0" in README
    assert "curl -N localhost:8080" in README and '"question": "How does graph_router stream' in README
    assert "data: [DONE]" in README
