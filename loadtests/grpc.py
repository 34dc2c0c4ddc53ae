"""gRPC cost: the router's CPU per request and added p50 latency, three paths, one run.

One-step graphs, each path measured the same way:

- ``grpc->grpc``: a gRPC client calls the router's gRPC front (``--grpc-port``); the
  step is ``grpc://`` to a gRPC model stand-in;
- ``rest->grpc``: an HTTP client posts V2 JSON to the same router; the step is the same
  gRPC stand-in (JSON -> protobuf -> JSON in the router);
- ``rest->rest``: the baseline, an HTTP client posting V2 JSON to a router whose step
  is ``http://`` to a static nginx answering V2 JSON.

The gRPC paths run twice: with grpcio peers (a ``grpc.aio`` client and stand-in, the
reference implementation, and what users run: grpcio, Triton and kserve clients in
front, kserve ModelServer or Triton as steps) and with light peers (a client and
stand-in on graph_router's own HTTP/2, ``graph_router.grpc.client`` / ``.server``).
The router under test is the same; only the processes around it differ. The grpcio
peers are the headline and the goal is judged on them.

Every path runs at the same fixed, paced rate (``--rate``, 1000 requests/s by default,
well below what the slowest path sustains): the router then does the same number of
calls per second whatever the peers cost, so its batching (calls per wake-up, per read,
per write) is the same for all of them. Run as fast as each path goes instead
(``--rate 0``), the light peers let the router take a dozen calls per wake-up and the
grpc.aio peers (about 200 µs of CPU per call each on a 2-core machine) hold it to a few,
and the CPU per call then measures the peers' speed as much as the router's work.

CPU µs per request: the router process's utime + stime over the run / requests
answered. Added p50: the p50 through the router minus the p50 of the same client
calling its backend directly (gRPC client -> stand-in for the gRPC-step paths, HTTP
client -> nginx for the baseline). Clients are this script's own (grpc.aio, and the
raw HTTP/1.1 client of common.py), ``--concurrency`` workers each on its own schedule,
in ``--rounds`` interleaved rounds (medians reported): the machine may be shared.

Then the 1 MiB check, in a pure-Python subprocess (tracemalloc sees no frames inside
compiled modules): one 1 MiB FP32 tensor through a gRPC front to a gRPC step, with
tracemalloc counting the Python buffers of at least 1 MiB that graph_router's own code
allocates (the front's join of the DATA frames into the request: one copy; the model
rename is sent as a second piece, not copied), and checking the stand-in received and
the client got the bytes unchanged.

    .venv/bin/python loadtests/grpc.py              # 3 rounds x 5 s per path at 1000/s (about 2 min)
    .venv/bin/python loadtests/grpc.py --rate 0     # unpaced: as fast as each path goes
    .venv/bin/python loadtests/grpc.py --quick      # 1 round x 1 s: a smoke test
    .venv/bin/python loadtests/grpc.py --backend PORT   # (internal) the gRPC stand-in
    .venv/bin/python loadtests/grpc.py --lean-backend PORT   # (internal) the light stand-in
    .venv/bin/python loadtests/grpc.py --one-mib   # (internal) the 1 MiB check, as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    HOST,
    ROOT,
    LoadRecorder,
    NginxBackend,
    RouterProcess,
    cpu_seconds,
    free_port,
    load_loop,
    machine_info,
    percentile,
    print_table,
    run_async,
    wait_port,
)

# This file's own name would shadow the grpc package: import that from the venv, not from here.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402
import grpc.aio  # noqa: E402

from graph_router.grpc._proto import grpc_predict_v2_pb2 as pb  # noqa: E402

ROWS = [[0.1, 0.2, 0.3, 0.4]]
V2_JSON = json.dumps({"id": "1", "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ROWS}]},
                     separators=(",", ":")).encode()
V2_ANSWER = '{"model_name":"m","id":"1","outputs":[{"name":"y","shape":[1],"datatype":"INT64","data":[1]}]}'
INFER = "/inference.GRPCInferenceService/ModelInfer"


def grpc_request(model: str) -> bytes:
    import array

    request = pb.ModelInferRequest(model_name=model, id="1")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(array.array("f", ROWS[0]).tobytes())
    return request.SerializeToString()


# --- the gRPC stand-in (a subprocess) --------------------------------------------------


def serve_backend(port: int) -> None:
    """A gRPC model answering every ModelInfer with one fixed response (bytes, no parse)."""
    import uvloop

    response = pb.ModelInferResponse(model_name="m", id="1")
    response.outputs.add(name="y", datatype="INT64", shape=[1])
    response.raw_output_contents.append((1).to_bytes(8, "little"))
    answer = response.SerializeToString()

    async def infer(request: bytes, context: Any) -> bytes:
        return answer

    async def main() -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(infer)}),))
        server.add_insecure_port(f"{HOST}:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(main())


def serve_lean_backend(port: int) -> None:
    """The same stand-in on graph_router's own HTTP/2 server (a light peer)."""
    import uvloop

    from graph_router.grpc.server import Call, LeanServer

    response = pb.ModelInferResponse(model_name="m", id="1")
    response.outputs.add(name="y", datatype="INT64", shape=[1])
    response.raw_output_contents.append((1).to_bytes(8, "little"))
    answer = response.SerializeToString()

    async def infer(call: Call) -> bytes:
        return answer

    async def main() -> None:
        await LeanServer({INFER: infer}, {}).start(HOST, port)
        await asyncio.Event().wait()

    uvloop.run(main())


# --- clients ---------------------------------------------------------------------------


async def paced(concurrency: int, seconds: float, rate: float | None, call: Any) -> list[float]:
    """Latencies (ms) of ``call()`` made by ``concurrency`` workers for ``seconds``.

    rate: requests per second across the workers, each on its own schedule (an open
    loop while the calls keep up); None: each worker calls again as soon as its call ends.
    """
    latencies: list[float] = []
    interval = concurrency / rate if rate else 0.0
    end = time.monotonic() + seconds

    async def worker(i: int) -> None:
        next_at = time.monotonic() + interval * i / concurrency
        while True:
            if interval:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at = max(next_at + interval, time.monotonic())
            start = time.monotonic()
            if start >= end:
                return
            await call()
            latencies.append((time.monotonic() - start) * 1000)

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return latencies


async def grpc_load(port: int, payload: bytes, concurrency: int, seconds: float,
                    rate: float | None = None) -> list[float]:
    """Latencies (ms) of ModelInfer calls on one grpc.aio channel (see :func:`paced`)."""
    async with grpc.aio.insecure_channel(f"{HOST}:{port}") as channel:
        call = channel.unary_unary(INFER)
        await call(payload)  # connect outside the measured window
        return await paced(concurrency, seconds, rate, lambda: call(payload))


async def lean_load(port: int, payload: bytes, concurrency: int, seconds: float,
                    rate: float | None = None) -> list[float]:
    """As grpc_load, with graph_router's own gRPC client (one connection, as a channel has)."""
    from graph_router.grpc.client import Channel

    channel = Channel(HOST, port, 64 * 1024 * 1024)
    parts = [payload]
    await channel.unary(INFER, parts, len(payload), None, None)
    try:
        return await paced(concurrency, seconds, rate, lambda: channel.unary(INFER, parts, len(payload), None, None))
    finally:
        channel.close()


async def rest_load(port: int, concurrency: int, seconds: float, rate: float | None = None) -> list[float]:
    recorder = LoadRecorder()
    stop = asyncio.Event()
    task = asyncio.create_task(load_loop(port, V2_JSON, concurrency, stop, recorder, rate=rate))
    await asyncio.sleep(seconds)
    stop.set()
    await task
    return recorder.latencies_ms()


# --- the 1 MiB check ---------------------------------------------------------------------


async def one_mib_check() -> dict[str, Any]:
    """Copies graph_router makes of a 1 MiB tensor crossing gRPC front -> gRPC step, and bit-exactness."""
    import array
    import tracemalloc

    from graph_router.grpc.front import GRPCFront
    from graph_router.loader import load_graph_json
    from graph_router.plan import compile_graph
    from graph_router.server import Router
    from graph_router.settings import ServerSettings
    from graph_router.upstream import UpstreamClient

    received: list[bytes] = []
    snapshots: list[tracemalloc.Snapshot] = []

    async def echo(raw: bytes, context: Any) -> bytes:
        received.append(raw)
        if tracemalloc.is_tracing():
            # Mid-flight: every buffer the router holds for this call is alive now.
            snapshots.append(tracemalloc.take_snapshot())
        request = pb.ModelInferRequest.FromString(raw)
        response = pb.ModelInferResponse(model_name=request.model_name)
        response.outputs.add(name="x", datatype="FP32", shape=request.inputs[0].shape)
        response.raw_output_contents.extend(request.raw_input_contents)
        return response.SerializeToString()

    big = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    backend = grpc.aio.server(options=big)
    backend.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(echo)}),))
    backend_port = backend.add_insecure_port(f"{HOST}:0")
    await backend.start()
    spec = {"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": f"grpc://{HOST}:{backend_port}/v2/models/echo/infer"}]}}}
    settings = ServerSettings(host=HOST, port=0, drain_seconds=0)
    client = UpstreamClient(settings.upstream)
    await client.start()
    router = Router(settings, compile_graph(load_graph_json(json.dumps(spec), name="g")), client)
    front = GRPCFront(router)
    port = await front.start(HOST, 0)
    values = array.array("f", [i / 3 for i in range(262144)])
    request = pb.ModelInferRequest(model_name="g")
    request.inputs.add(name="x", datatype="FP32", shape=[len(values)])
    request.raw_input_contents.append(values.tobytes())
    payload = request.SerializeToString()
    async with grpc.aio.insecure_channel(f"{HOST}:{port}", options=big) as channel:
        call = channel.unary_unary(INFER)
        await call(payload)  # warm: channels, imports
        received.clear()
        tracemalloc.start(1)
        answer_raw = await call(payload)
        tracemalloc.stop()
    snapshot = snapshots[0]
    router_file = str(ROOT / "graph_router")
    big = [t for t in snapshot.traces if t.size >= 1024 * 1024]
    ours = [t for t in big if t.traceback[0].filename.startswith(router_file)]
    answer = pb.ModelInferResponse.FromString(answer_raw)
    exact_in = pb.ModelInferRequest.FromString(received[0]).raw_input_contents[0] == values.tobytes()
    exact_out = answer.raw_output_contents[0] == values.tobytes()
    await front.stop(0)
    await client.close()
    await backend.stop(0)
    return {"tensor_bytes": len(values.tobytes()), "router_copies": len(ours), "mib_buffers_alive": len(big),
            "where": sorted({f"{Path(t.traceback[0].filename).name}:{t.traceback[0].lineno}" for t in ours}),
            "bit_exact_to_step": exact_in, "bit_exact_back": exact_out}


# --- the run -------------------------------------------------------------------------------


def measure(router: RouterProcess | subprocess.Popen[bytes] | None, run: Any) -> tuple[float, list[float]]:
    """(CPU seconds of ``router`` (or of the stand-in, for a direct run), latencies) of one load run."""
    def cpu() -> float:
        if router is None:
            return 0.0
        return router.cpu() if isinstance(router, RouterProcess) else cpu_seconds([router.pid])

    before = cpu()
    latencies: list[float] = run_async(run())
    return cpu() - before, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="requests per second, paced, the same for every path; 0: as fast as each goes")
    parser.add_argument("--backend", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--lean-backend", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--one-mib", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend is not None:
        serve_backend(args.backend)
        return
    if args.lean_backend is not None:
        serve_lean_backend(args.lean_backend)
        return
    if args.one_mib:
        print(json.dumps(run_async(one_mib_check())))
        return
    rounds, seconds = (1, 1.0) if args.quick else (args.rounds, args.seconds)
    c, rate = args.concurrency, (args.rate or None)
    grpc_port = free_port()
    backend = subprocess.Popen([sys.executable, __file__, "--backend", str(grpc_port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lean_port = free_port()
    lean_backend = subprocess.Popen([sys.executable, __file__, "--lean-backend", str(lean_port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nginx = NginxBackend({"/": V2_ANSWER})
    results: dict[str, dict[str, list[float]]] = {}
    try:
        if not wait_port(grpc_port, 15) or not wait_port(lean_port, 15):
            raise RuntimeError("a gRPC stand-in did not start")
        nginx.start()
        front_port = free_port()
        to_grpc = RouterProcess({"nodes": {"root": {"routerType": "Sequence", "steps": [
            {"serviceUrl": f"grpc://{HOST}:{grpc_port}/v2/models/m/infer"}]}}},
            extra=["--grpc-port", str(front_port), "--name", "g"]).start()
        to_rest = RouterProcess({"nodes": {"root": {"routerType": "Sequence", "steps": [
            {"serviceUrl": nginx.url("/v2/models/m/infer")}]}}}).start()
        lean_front = free_port()
        to_lean = RouterProcess({"nodes": {"root": {"routerType": "Sequence", "steps": [
            {"serviceUrl": f"grpc://{HOST}:{lean_port}/v2/models/m/infer"}]}}},
            extra=["--grpc-port", str(lean_front), "--name", "g"]).start()
        if not wait_port(front_port, 15) or not wait_port(lean_front, 15):
            raise RuntimeError("the router's gRPC front did not start")
        request_g, request_m = grpc_request("g"), grpc_request("m")
        paths: dict[str, tuple[RouterProcess | subprocess.Popen[bytes] | None, Any]] = {
            "grpc->grpc": (to_grpc, lambda: grpc_load(front_port, request_g, c, seconds, rate)),
            "rest->grpc": (to_grpc, lambda: rest_load(to_grpc.port, c, seconds, rate)),
            "rest->rest": (to_rest, lambda: rest_load(to_rest.port, c, seconds, rate)),
            "grpc->grpc light": (to_lean, lambda: lean_load(lean_front, request_g, c, seconds, rate)),
            "rest->grpc light": (to_lean, lambda: rest_load(to_lean.port, c, seconds, rate)),
            "direct grpc": (backend, lambda: grpc_load(grpc_port, request_m, c, seconds, rate)),
            "direct light": (lean_backend, lambda: lean_load(lean_port, request_m, c, seconds, rate)),
            "direct rest": (None, lambda: rest_load(nginx.port, c, seconds, rate)),
        }
        if not args.quick:  # warm every path once (imports, pools, channels)
            for router, run in paths.values():
                measure(router, lambda run=run: _shorter(run))
        for _ in range(rounds):
            for name, (router, run) in paths.items():
                cpu, latencies = measure(router, run)
                entry = results.setdefault(name, {"cpu_us": [], "p50_ms": [], "rps": []})
                entry["cpu_us"].append(cpu / max(1, len(latencies)) * 1e6)
                entry["p50_ms"].append(percentile(latencies, 50))
                entry["rps"].append(len(latencies) / seconds)
        to_grpc.cleanup()
        to_rest.cleanup()
        to_lean.cleanup()
    finally:
        for process in (backend, lean_backend):
            process.kill()
            process.wait(5)
        nginx.stop()
    med = {name: {k: statistics.median(v) for k, v in entry.items()} for name, entry in results.items()}
    direct = {"grpc->grpc": "direct grpc", "rest->grpc": "direct grpc", "grpc->grpc light": "direct light",
              "rest->grpc light": "direct light", "rest->rest": "direct rest"}
    rows = []
    for name, base in direct.items():
        rows.append([name, round(med[name]["rps"]), round(med[name]["cpu_us"]), round(med[name]["p50_ms"], 3),
                     round(med[name]["p50_ms"] - med[base]["p50_ms"], 3)])
    print_table(["path", "req/s", "router CPU µs/req", "p50 ms", "added p50 ms"], rows,
                title=f"one-step graph, {c} workers, {f'{rate:g} requests/s each path' if rate else 'unpaced'}, "
                      f"median of {rounds} round(s) x {seconds:g} s")
    ratio = med["grpc->grpc"]["cpu_us"] / med["rest->rest"]["cpu_us"]
    ratio_light = med["grpc->grpc light"]["cpu_us"] / med["rest->rest"]["cpu_us"]
    check = subprocess.run([sys.executable, __file__, "--one-mib"], capture_output=True, check=True,
                           env={**os.environ, "GRAPH_ROUTER_PURE_PYTHON": "1"})
    copies = json.loads(check.stdout.decode().strip().splitlines()[-1])
    print(f"grpc->grpc CPU / rest->rest CPU, grpcio peers: {ratio:.2f} (goal: at most 1.5); "
          f"light peers: {ratio_light:.2f}")
    print(f"the stand-ins alone, CPU µs per call: grpc.aio {med['direct grpc']['cpu_us']:.0f}, "
          f"graph_router's own {med['direct light']['cpu_us']:.0f}")
    print(f"1 MiB FP32 tensor, gRPC front -> gRPC step: {copies['router_copies']} copy by graph_router "
          f"({', '.join(copies['where']) or 'none'}); bit-exact to the step: {copies['bit_exact_to_step']}, "
          f"back: {copies['bit_exact_back']}")
    ok = ratio <= 1.5 and copies["router_copies"] <= 1 and copies["bit_exact_to_step"] and copies["bit_exact_back"]
    print(json.dumps({"ok": ok, "rate": rate, "cpu_ratio": round(ratio, 3),
                      "cpu_ratio_light_peers": round(ratio_light, 3), "paths": med, "one_mib": copies,
                      "machine": machine_info()}, separators=(",", ":")))
    raise SystemExit(0 if ok else 1)


async def _shorter(run: Any) -> list[float]:
    """A path's run, for warming up (its own duration; the result is dropped)."""
    result: list[float] = await run()
    return result


if __name__ == "__main__":
    main()
