"""Router overhead per node kind, measured with wrk against a static nginx backend.

For each graph (seq1, seq3, ensemble2, switch, splitter, nested) wrk drives the router
at 1 and at 16 connections; the same backend is also measured directly. Reported per
graph and concurrency: throughput, p50/p99 latency, the added p50 latency per step
call ("per hop": (router p50 - direct p50) / step calls), and the router's CPU time
per request (utime + stime from /proc, all router processes). Finally seq3 at 16
connections with ``--workers 1`` and ``--workers 2``.

    .venv/bin/python loadtests/overhead.py            # 10 s per measurement (about 4 min)
    .venv/bin/python loadtests/overhead.py --quick    # 1 s per measurement, smoke test
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from common import (
    NginxBackend,
    RouterProcess,
    WrkResult,
    busy_other_processes,
    cpu_seconds,
    emit_json,
    machine_info,
    print_table,
    run_wrk,
    temp_dir,
    wrk_script,
)

PAYLOAD = json.dumps({"instances": [{"modelId": "2", "x": [1.0, 2.0, 3.0]}]}, separators=(",", ":"))


def graphs(backend: NginxBackend) -> dict[str, tuple[dict[str, Any], int]]:
    """Graph name -> (InferenceGraph spec, step calls per request)."""
    a, b, c = (backend.url(f"/v1/models/{m}:predict") for m in ("a", "b", "c"))
    return {
        "seq1": ({"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": a}]}}}, 1),
        "seq3": ({"nodes": {"root": {"routerType": "Sequence", "steps": [
            {"serviceUrl": a}, {"serviceUrl": b, "data": "$response"}, {"serviceUrl": c, "data": "$response"},
        ]}}}, 3),
        "ensemble2": ({"nodes": {"root": {"routerType": "Ensemble", "steps": [
            {"name": "left", "serviceUrl": a}, {"name": "right", "serviceUrl": b},
        ]}}}, 2),
        "switch": ({"nodes": {"root": {"routerType": "Switch", "steps": [
            {"serviceUrl": a, "condition": 'instances.#(modelId=="1")'},
            {"serviceUrl": b, "condition": 'instances.#(modelId=="2")'},
        ]}}}, 1),
        "splitter": ({"nodes": {"root": {"routerType": "Splitter", "steps": [
            {"serviceUrl": a, "weight": 50}, {"serviceUrl": b, "weight": 50},
        ]}}}, 1),
        # Sequence -> Switch -> Ensemble: 1 + 2 step calls through three nodes.
        "nested": ({"nodes": {
            "root": {"routerType": "Sequence", "steps": [
                {"name": "pre", "serviceUrl": a},
                {"name": "route", "nodeName": "pick"},
            ]},
            "pick": {"routerType": "Switch", "steps": [
                {"nodeName": "fan", "condition": 'instances.#(modelId=="2")'},
            ]},
            "fan": {"routerType": "Ensemble", "steps": [
                {"name": "left", "serviceUrl": b}, {"name": "right", "serviceUrl": c},
            ]},
        }}, 3),
    }


def measure(router: RouterProcess, script: Path, connections: int, seconds: float) -> tuple[WrkResult, float]:
    """One wrk run through the router; returns wrk's figures and router CPU µs per request."""
    pids = router.pids()
    cpu0 = cpu_seconds(pids)
    res = run_wrk(router.url("/"), script, connections, seconds, threads=1)
    cpu1 = cpu_seconds(pids)
    cpu_us = (cpu1 - cpu0) * 1e6 / res.requests if res.requests else 0.0
    return res, cpu_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 s measurements, a smoke test")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per measurement (default 10)")
    parser.add_argument("--only", default="", help="comma-separated graph names to run (default: all)")
    args = parser.parse_args()
    seconds = args.seconds or (1.0 if args.quick else 10.0)
    warmup = 0.0 if args.quick else 2.0  # quick: no warm-up runs
    concurrencies = (1, 16)
    started = time.monotonic()
    info = machine_info()
    info["busy_other_processes"] = busy_other_processes()
    print(f"machine: {info['cores']} cores, {info['cpu_model']}, load {info['loadavg_1_5_15']}")
    for line in info["busy_other_processes"]:
        print(f"  other busy process: {line}")

    results: dict[str, Any] = {"seconds_per_run": seconds, "machine": info, "direct": {}, "graphs": {},
                               "workers": {}}
    with temp_dir() as tmp, NginxBackend() as backend:
        script = wrk_script(tmp, PAYLOAD)
        direct_url = backend.url("/v1/models/a:predict")
        if warmup:
            run_wrk(direct_url, script, 16, warmup, threads=1)
        direct: dict[int, WrkResult] = {}
        for c in concurrencies:
            direct[c] = run_wrk(direct_url, script, c, seconds, threads=1)
            results["direct"][c] = direct[c]
        print_table(["target", "conns", "req/s", "p50 ms", "p99 ms", "errors"],
                    [["nginx direct", c, r.rps, r.p50_ms, r.p99_ms, r.errors] for c, r in direct.items()],
                    title="Backend measured directly (one call per request)")

        only = {x for x in args.only.split(",") if x}
        rows = []
        for name, (spec, calls) in graphs(backend).items():
            if only and name not in only:
                continue
            with RouterProcess(spec) as router:
                if warmup:
                    run_wrk(router.url("/"), script, 16, warmup, threads=1)
                per: dict[int, Any] = {}
                for c in concurrencies:
                    res, cpu_us = measure(router, script, c, seconds)
                    added = res.p50_ms - direct[c].p50_ms
                    per_hop_us = added * 1000 / calls
                    per[c] = {"wrk": res, "cpu_us_per_request": cpu_us, "cpu_us_per_call": cpu_us / calls,
                              "added_p50_ms": added, "overhead_per_hop_us": per_hop_us, "step_calls": calls}
                    rows.append([name, calls, c, res.rps, res.p50_ms, res.p99_ms, direct[c].p50_ms,
                                 per_hop_us, cpu_us, cpu_us / calls, res.errors])
                results["graphs"][name] = per
        print_table(["graph", "calls", "conns", "req/s", "p50 ms", "p99 ms", "direct p50", "hop µs (p50)",
                     "CPU µs/req", "CPU µs/call", "errors"], rows,
                    title="Through the router (hop = (p50 - direct p50) / step calls)")

        if not only or "seq3" in only:
            spec, calls = graphs(backend)["seq3"]
            wrows = []
            for workers in (1, 2):
                with RouterProcess(spec, workers=workers) as router:
                    if warmup:
                        run_wrk(router.url("/"), script, 16, warmup, threads=1)
                    res, cpu_us = measure(router, script, 16, seconds)
                    results["workers"][workers] = {"wrk": res, "cpu_us_per_request": cpu_us}
                    wrows.append([f"seq3 --workers {workers}", 16, res.rps, res.p50_ms, res.p99_ms, cpu_us,
                                  res.errors])
            print_table(["router", "conns", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "errors"], wrows,
                        title="Worker processes (seq3, 16 connections)")
            w1, w2 = results["workers"][1]["wrk"].rps, results["workers"][2]["wrk"].rps
            results["workers_speedup"] = w2 / w1 if w1 else 0.0
            print(f"workers 2 / workers 1 throughput: {results['workers_speedup']:.2f}x")

    info_after = machine_info()
    results["loadavg_after"] = info_after["loadavg_1_5_15"]
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    total_errors = sum(g[c]["wrk"].errors for g in results["graphs"].values() for c in g)
    results["ok"] = total_errors == 0
    print(f"elapsed {results['elapsed_s']} s, errors through the router: {total_errors}")
    emit_json({"test": "overhead", **results})


if __name__ == "__main__":
    main()
