"""Router overhead per node kind, measured with wrk against a static nginx backend.

For each graph (seq1, seq3, ensemble2, switch, splitter, nested) wrk drives the router
at 1 and at 16 connections; the same backend is also measured directly. Reported per
graph and concurrency: throughput, p50/p99 latency, the added p50 latency per step
call ("per hop": (router p50 - direct p50) / step calls), and the router's CPU time
per request (utime + stime from /proc, all router processes). Then seq3 at 16
connections with ``--workers 1`` and ``--workers 2``.

The machine may be shared, so every router is started first and the measurements
run in ``--rounds`` interleaved rounds (each configuration once per round); the
tables give the median over rounds. Each run also records the CPU the rest of the
machine used meanwhile ("others %": busy time from /proc/stat minus the router,
nginx, wrk and this script, as a share of all cores), so a disturbed figure shows.

    .venv/bin/python loadtests/overhead.py            # 3 rounds x 5 s per configuration (about 4 min)
    .venv/bin/python loadtests/overhead.py --quick    # 1 round x 1 s, no warm-up: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from common import (
    NginxBackend,
    RouterProcess,
    busy_other_processes,
    children_cpu_seconds,
    cpu_seconds,
    finish,
    machine_info,
    print_table,
    run_wrk,
    self_cpu_seconds,
    system_busy_seconds,
    temp_dir,
    wrk_script,
)

PAYLOAD = json.dumps({"instances": [{"modelId": "2", "x": [1.0, 2.0, 3.0]}]}, separators=(",", ":"))
CONCURRENCIES = (1, 16)


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


def measure(url: str, script: Path, connections: int, seconds: float, router_pids: list[int],
            nginx_pids: list[int]) -> dict[str, Any]:
    """One wrk run; wrk's figures plus CPU of the router, nginx, wrk and everything else."""
    sys0, r0, n0 = system_busy_seconds(), cpu_seconds(router_pids), cpu_seconds(nginx_pids)
    w0, s0, t0 = children_cpu_seconds(), self_cpu_seconds(), time.monotonic()
    res = run_wrk(url, script, connections, seconds, threads=1)
    wall = time.monotonic() - t0
    router = cpu_seconds(router_pids) - r0
    nginx = cpu_seconds(nginx_pids) - n0
    wrk = children_cpu_seconds() - w0
    others = (system_busy_seconds() - sys0) - router - nginx - wrk - (self_cpu_seconds() - s0)
    cores = os.cpu_count() or 1
    return {
        **asdict(res), "errors": res.errors,
        "router_cpu_us_per_request": router * 1e6 / res.requests if res.requests else 0.0,
        "router_cores": router / wall, "nginx_cores": nginx / wall, "wrk_cores": wrk / wall,
        "others_pct": max(0.0, 100.0 * others / (wall * cores)),
    }


def median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s runs, no warm-up: a smoke test")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per run (default 5)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 3)")
    parser.add_argument("--only", default="", help="comma-separated graph names to run (default: all)")
    args = parser.parse_args()
    seconds = args.seconds or (1.0 if args.quick else 5.0)
    rounds = args.rounds or (1 if args.quick else 3)
    warmup = 0.0 if args.quick else 2.0
    started = time.monotonic()
    info = machine_info()
    info["busy_other_processes"] = busy_other_processes()
    print(f"machine: {info['cores']} cores, {info['cpu_model']}, load {info['loadavg_1_5_15']}")
    for line in info["busy_other_processes"]:
        print(f"  other busy process: {line}")
    print(f"{rounds} round(s) of {seconds:g} s runs; medians over rounds", flush=True)

    only = {x for x in args.only.split(",") if x}
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with temp_dir() as tmp, NginxBackend() as backend:
        script = wrk_script(tmp, PAYLOAD)
        nginx_pids = backend.pids()
        specs = graphs(backend)
        names = [n for n in specs if not only or n in only]
        routers: dict[str, RouterProcess] = {}
        try:
            for name in names:
                routers[name] = RouterProcess(specs[name][0]).start()
            if "seq3" in names:
                routers["seq3 --workers 2"] = RouterProcess(specs["seq3"][0], workers=2).start()
            # Which (target, connections) pairs run each round, and where they point.
            plan: list[tuple[str, int, str, list[int]]] = [
                ("direct", c, backend.url("/v1/models/a:predict"), []) for c in CONCURRENCIES
            ]
            for name in names:
                plan += [(name, c, routers[name].url("/"), routers[name].pids()) for c in CONCURRENCIES]
            if "seq3 --workers 2" in routers:
                r2 = routers["seq3 --workers 2"]
                plan.append(("seq3 --workers 2", 16, r2.url("/"), r2.pids()))
            if warmup:
                for _, _, url, _ in plan[::2] + plan[-1:]:
                    run_wrk(url, script, 16, warmup, threads=1)
            for rnd in range(rounds):
                order = plan[rnd % len(plan):] + plan[:rnd % len(plan)]  # rotate: no fixed position
                for target, c, url, pids in order:
                    runs.setdefault((target, c), []).append(measure(url, script, c, seconds, pids, nginx_pids))
                print(f"  round {rnd + 1}/{rounds} done ({time.monotonic() - started:.0f} s)", flush=True)
            alive = all(r.proc is not None and r.proc.poll() is None for r in routers.values())
        finally:
            for r in routers.values():
                r.cleanup()

    def agg(target: str, c: int) -> dict[str, float]:
        rr = runs[(target, c)]
        keys = ("rps", "p50_ms", "p99_ms", "router_cpu_us_per_request", "router_cores", "nginx_cores",
                "wrk_cores", "others_pct")
        out = {k: median(rr, k) for k in keys}
        out["errors"] = sum(r["errors"] for r in rr)
        out["others_pct_max"] = max(r["others_pct"] for r in rr)
        return out

    direct = {c: agg("direct", c) for c in CONCURRENCIES}
    print_table(["target", "conns", "req/s", "p50 ms", "p99 ms", "nginx cores", "wrk cores", "others %", "errors"],
                [["nginx direct", c, d["rps"], d["p50_ms"], d["p99_ms"], d["nginx_cores"], d["wrk_cores"],
                  d["others_pct"], d["errors"]] for c, d in direct.items()],
                title="Backend measured directly (one call per request)")
    rows: list[list[object]] = []
    by_graph: dict[str, dict[int, dict[str, float]]] = {}
    for name in names:
        calls = specs[name][1]
        by_graph[name] = {}
        for c in CONCURRENCIES:
            a = agg(name, c)
            a["step_calls"] = calls
            a["added_p50_ms"] = a["p50_ms"] - direct[c]["p50_ms"]
            a["overhead_per_hop_us"] = a["added_p50_ms"] * 1000 / calls
            a["router_cpu_us_per_call"] = a["router_cpu_us_per_request"] / calls
            by_graph[name][c] = a
            rows.append([name, calls, c, a["rps"], a["p50_ms"], a["p99_ms"], a["overhead_per_hop_us"],
                         a["router_cpu_us_per_request"], a["router_cpu_us_per_call"], a["router_cores"],
                         a["others_pct"], a["errors"]])
    print_table(["graph", "calls", "conns", "req/s", "p50 ms", "p99 ms", "hop µs (p50)", "CPU µs/req",
                 "CPU µs/call", "router cores", "others %", "errors"], rows,
                title="Through the router (hop = (p50 - direct p50) / step calls; medians)")
    result: dict[str, Any] = {"test": "overhead", "seconds_per_run": seconds, "rounds": rounds,
                              "direct": direct, "graphs": by_graph}
    if "seq3" in names:
        w = {1: agg("seq3", 16), 2: agg("seq3 --workers 2", 16)}
        print_table(["router", "conns", "req/s", "p50 ms", "p99 ms", "CPU µs/req", "router cores", "nginx cores",
                     "wrk cores", "others %", "errors"],
                    [[f"seq3 --workers {k}", 16, v["rps"], v["p50_ms"], v["p99_ms"], v["router_cpu_us_per_request"],
                      v["router_cores"], v["nginx_cores"], v["wrk_cores"], v["others_pct"], v["errors"]]
                     for k, v in w.items()],
                    title="Worker processes (seq3, 16 connections; medians)")
        result["workers"] = w
        result["workers_speedup"] = w[2]["rps"] / w[1]["rps"] if w[1]["rps"] else 0.0
        print(f"workers 2 / workers 1 throughput: {result['workers_speedup']:.2f}x")
    total_errors = sum(r["errors"] for (t, _), rr in runs.items() if t != "direct" for r in rr)
    result.update({
        "ok": total_errors == 0 and alive, "router_errors": total_errors, "routers_alive": alive,
        "machine": info, "loadavg_after": machine_info()["loadavg_1_5_15"],
        "elapsed_s": round(time.monotonic() - started, 1),
        "runs": {f"{t} c{c}": rr for (t, c), rr in runs.items()},
    })
    print(f"elapsed {result['elapsed_s']} s, errors through the router: {total_errors}")
    finish(result)


if __name__ == "__main__":
    main()
