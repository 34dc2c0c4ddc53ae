"""A step's service dies under load and comes back on the same port: errors and recovery.

The router runs a one-step Sequence in front of the stand-in service. Clients send
a paced load (default 400 requests/s over 16 kept-alive connections). After a
healthy period the stand-in is killed with SIGKILL, stays down ``--down`` seconds,
and is started again on the same port. Reported:

- the error rate while it is down (requests started before its return and still
  unanswered at the kill; with the statuses and latency of those errors: failing
  fast matters as much as failing);
- from its return (the moment its port accepts connections again): the time to the
  router's first 200, and the recovery time, after which every request succeeded
  (the end of the last failure);
- the success rate per second around the outage.

    .venv/bin/python loadtests/outage.py            # 5 s healthy, 10 s down, 20 s after
    .venv/bin/python loadtests/outage.py --quick    # 2 s, 4 s, 8 s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from common import (
    OK,
    LoadRecorder,
    RouterProcess,
    StandIn,
    finish,
    load_loop,
    machine_info,
    percentile,
    print_table,
    raise_fd_limit,
    run_async,
)

PAYLOAD = json.dumps({"instances": [[1.0, 2.0, 3.0]]}).encode()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    standin = StandIn(min_ms=1, max_ms=5)
    await asyncio.to_thread(standin.start)
    spec = {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": standin.url()}]}}}
    router = RouterProcess(spec)
    await asyncio.to_thread(router.start)
    recorder = LoadRecorder()
    stop = asyncio.Event()
    load = asyncio.create_task(load_loop(router.port, PAYLOAD, args.concurrency, stop, recorder, rate=args.rate,
                                         timeout=5.0, hard_deadline=args.healthy + args.down + args.after + 60))
    try:
        t_start = time.monotonic()
        await asyncio.sleep(args.healthy)
        t_kill = time.monotonic()
        await asyncio.to_thread(standin.kill)
        await asyncio.sleep(args.down)
        await asyncio.to_thread(standin.start)  # returns once the port accepts connections
        t_return = time.monotonic()
        await asyncio.sleep(args.after)
    finally:
        stop.set()
        await load
        alive = router.proc is not None and router.proc.poll() is None
        router.cleanup()
        standin.kill()

    outs = recorder.outcomes
    # A request still in flight at the kill belongs to the outage.
    before = [o for o in outs if o.end < t_kill]
    down = [o for o in outs if o.end >= t_kill and o.start < t_return]
    after = [o for o in outs if o.start >= t_return]
    down_fail = [o for o in down if o.kind != OK]
    first_ok = min((o.end for o in after if o.kind == OK), default=None)
    last_fail = max((o.end for o in outs if o.kind != OK and o.end >= t_return), default=None)
    statuses: dict[str, int] = {}
    for o in down_fail:
        key = str(o.status) if o.status else o.kind
        statuses[key] = statuses.get(key, 0) + 1
    fail_lat = [(o.end - o.start) * 1000 for o in down_fail]

    bins = []
    t = t_start
    while t < t_return + args.after:
        in_bin = [o for o in outs if t <= o.start < t + 1.0]
        ok = sum(1 for o in in_bin if o.kind == OK)
        bins.append({"t_from_kill_s": round(t - t_kill, 1), "requests": len(in_bin),
                     "success_pct": 100.0 * ok / len(in_bin) if in_bin else 0.0})
        t += 1.0
    return {
        "rate_rps": args.rate, "concurrency": args.concurrency, "healthy_s": args.healthy, "down_s": args.down,
        "after_s": args.after, "down_measured_s": t_return - t_kill,
        "errors_before": sum(1 for o in before if o.kind != OK), "requests_before": len(before),
        "requests_down": len(down), "errors_down": len(down_fail),
        "error_rate_down_pct": 100.0 * len(down_fail) / len(down) if down else 0.0,
        "down_error_kinds": statuses,
        "down_error_latency_p50_ms": percentile(fail_lat, 50), "down_error_latency_p99_ms": percentile(fail_lat, 99),
        "requests_after": len(after), "errors_after": sum(1 for o in after if o.kind != OK),
        "first_success_after_return_s": (first_ok - t_return) if first_ok is not None else None,
        "recovered_after_return_s": max(0.0, last_fail - t_return) if last_fail is not None else 0.0,
        "error_samples": recorder.samples(3, since=t_kill),
        "router_alive": alive, "per_second": bins,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--healthy", type=float, default=5.0, help="seconds before the kill (default 5)")
    parser.add_argument("--down", type=float, default=10.0, help="seconds the service stays down (default 10)")
    parser.add_argument("--after", type=float, default=20.0, help="seconds measured after it returns (default 20)")
    parser.add_argument("--rate", type=float, default=400.0, help="requests per second (default 400)")
    parser.add_argument("--concurrency", type=int, default=16, help="client connections (default 16)")
    parser.add_argument("--quick", action="store_true", help="2 s healthy, 4 s down, 8 s after")
    args = parser.parse_args()
    if args.quick:
        args.healthy, args.down, args.after = 2.0, 4.0, 8.0
    raise_fd_limit()
    info = machine_info()
    print(f"machine: {info['cores']} cores, {info['cpu_model']}, load {info['loadavg_1_5_15']}")
    print(f"outage: {args.rate:g} req/s, stand-in killed after {args.healthy:g} s, down {args.down:g} s, "
          f"then {args.after:g} s")
    r = run_async(main_async(args))
    print_table(["t from kill (s)", "requests", "success %"],
                [[b["t_from_kill_s"], b["requests"], b["success_pct"]] for b in r["per_second"]],
                title="Success rate per second (the service is down from 0 until its return)")
    fs = r["first_success_after_return_s"]
    print_table(["errors before", "error rate down %", "down errors", "p50 / p99 ms of errors",
                 "first 200 after return s", "recovered after s", "errors after return"],
                [[r["errors_before"], r["error_rate_down_pct"], json.dumps(r["down_error_kinds"]),
                  f"{r['down_error_latency_p50_ms']:.1f} / {r['down_error_latency_p99_ms']:.1f}",
                  fs if fs is not None else "never", r["recovered_after_return_s"], r["errors_after"]]],
                title=f"Outage of {r['down_measured_s']:.1f} s")
    for sample in r["error_samples"]:
        print(f"  error answer: {sample}")
    r["ok"] = r["errors_before"] == 0 and fs is not None and r["router_alive"]
    finish({"test": "outage", **r, "machine": info})


if __name__ == "__main__":
    main()
