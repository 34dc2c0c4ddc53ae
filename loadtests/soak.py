"""A bounded soak: steady wrk load on a seq3 graph, the router's RSS sampled every 10 s.

wrk runs back to back in ``--sample-seconds`` slices (so each slice has its own
throughput, latency and error figures); after each slice the router's resident set
size is read from /proc. Reported: RSS idle (before load), at the first sample, at the
end and the maximum; growth from the first sample to the end (MiB and %); the RSS
slope over the second half of the run (MiB per minute: a leak keeps climbing after
the allocator has warmed up); requests and errors.

    .venv/bin/python loadtests/soak.py                 # 10 minutes (the documented run)
    .venv/bin/python loadtests/soak.py --minutes 3
    .venv/bin/python loadtests/soak.py --quick         # 20 s, 5 s samples
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from common import (
    MIB,
    NginxBackend,
    RouterProcess,
    busy_other_processes,
    fd_count,
    finish,
    machine_info,
    print_table,
    run_wrk,
    temp_dir,
    wrk_script,
)

PAYLOAD = json.dumps({"instances": [{"modelId": "2", "x": [1.0, 2.0, 3.0]}]}, separators=(",", ":"))


def seq3(backend: NginxBackend) -> dict[str, Any]:
    """A three-step Sequence, each step fed the previous answer."""
    return {"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": backend.url("/v1/models/a:predict")},
        {"serviceUrl": backend.url("/v1/models/b:predict"), "data": "$response"},
        {"serviceUrl": backend.url("/v1/models/c:predict"), "data": "$response"},
    ]}}}


def slope_mib_per_min(points: list[tuple[float, int]]) -> float:
    """Least-squares slope of (seconds, bytes) points, in MiB per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    den = sum((t - mx) ** 2 for t, _ in points)
    if den == 0:
        return 0.0
    return sum((t - mx) * (v - my) for t, v in points) / den * 60 / MIB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="soak length (default 10)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="RSS sample period (default 10)")
    parser.add_argument("--quick", action="store_true", help="20 s with 5 s samples, a smoke test")
    args = parser.parse_args()
    total = 20.0 if args.quick else args.minutes * 60
    sample = 5.0 if args.quick else args.sample_seconds
    slices = max(2, round(total / sample))
    info = machine_info()
    info["busy_other_processes"] = busy_other_processes()
    print(f"machine: {info['cores']} cores, {info['cpu_model']}, load {info['loadavg_1_5_15']}")
    print(f"soak: seq3, {args.connections} connections, {slices} x {sample:g} s")

    samples: list[dict[str, Any]] = []
    with temp_dir() as tmp, NginxBackend() as backend, RouterProcess(seq3(backend)) as router:
        script = wrk_script(tmp, PAYLOAD)
        idle_rss = router.rss()
        t0 = time.monotonic()
        for i in range(slices):
            res = run_wrk(router.url("/"), script, args.connections, sample, threads=1)
            pids = router.pids()
            samples.append({
                "t_s": round(time.monotonic() - t0, 1), "rss": router.rss(), "fds": fd_count(pids),
                "requests": res.requests, "rps": res.rps, "p50_ms": res.p50_ms, "p99_ms": res.p99_ms,
                "errors": res.errors,
            })
            s = samples[-1]
            if args.quick or i % max(1, round(60 / sample)) == 0 or i == slices - 1:
                print(f"  t={s['t_s']:7.1f}s rss={s['rss'] / MIB:7.1f} MiB fds={s['fds']:4d} "
                      f"req/s={s['rps']:7.0f} p99={s['p99_ms']:6.2f} ms errors={s['errors']}", flush=True)
        alive = router.proc is not None and router.proc.poll() is None
        final_idle_rss = router.rss()

    rss = [s["rss"] for s in samples]
    start, end, peak = rss[0], rss[-1], max(rss)
    half = samples[len(samples) // 2:]
    result: dict[str, Any] = {
        "test": "soak", "graph": "seq3", "connections": args.connections, "seconds": round(total),
        "sample_seconds": sample,
        "rss_idle_mib": idle_rss / MIB, "rss_start_mib": start / MIB, "rss_end_mib": end / MIB,
        "rss_max_mib": peak / MIB, "rss_after_load_mib": final_idle_rss / MIB,
        "growth_mib": (end - start) / MIB, "growth_pct": 100.0 * (end - start) / start if start else 0.0,
        "second_half_slope_mib_per_min": slope_mib_per_min([(s["t_s"], s["rss"]) for s in half]),
        "requests": sum(s["requests"] for s in samples), "errors": sum(s["errors"] for s in samples),
        "mean_rps": sum(s["rps"] for s in samples) / len(samples),
        "worst_slice_p99_ms": max(s["p99_ms"] for s in samples),
        "fds_start": samples[0]["fds"], "fds_end": samples[-1]["fds"],
        "router_alive": alive, "machine": info, "loadavg_after": machine_info()["loadavg_1_5_15"],
    }
    result["ok"] = result["errors"] == 0 and alive
    print_table(
        ["RSS idle", "RSS start", "RSS end", "RSS max", "growth MiB", "growth %", "slope MiB/min (2nd half)",
         "requests", "errors", "mean req/s"],
        [[result["rss_idle_mib"], result["rss_start_mib"], result["rss_end_mib"], result["rss_max_mib"],
          result["growth_mib"], result["growth_pct"], result["second_half_slope_mib_per_min"],
          result["requests"], result["errors"], result["mean_rps"]]],
        title="Soak summary (RSS in MiB; start = after the first sample period under load)",
    )
    finish({**result, "samples": samples})


if __name__ == "__main__":
    main()
