"""Graceful shutdown under load: SIGTERM mid-load must lose no accepted request.

A router (``--drain-seconds 2``) runs a one-step Sequence in front of a stand-in
service that takes 50-200 ms per call. An asyncio client keeps 32 requests in flight;
SIGTERM is sent mid-load and the client keeps sending until the router has exited.
Every request is classified by where it ended:

- answered 200;
- refused before accept: connect() was refused (the listener was closed), so nothing
  was sent and the router never had it; not a lost request (a refused worker retries
  every 50 ms, so these count attempts);
- lost: the connection was established and the request written, then the answer was
  not a whole 200: a non-200 status, the connection closed before any answer byte
  (on a kept-alive connection, or on a fresh one the kernel had accepted), an answer
  cut short, or no answer within 10 s. Target: 0.

Runs with kept-alive client connections and with a fresh connection per request,
``--repeat`` times each (default 5).

    .venv/bin/python loadtests/sigterm.py             # 5 x 2 runs (about 1 min)
    .venv/bin/python loadtests/sigterm.py --quick     # 1 x 2 runs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from typing import Any

from common import (
    CLOSED_REUSED,
    CONNECT_ERROR,
    CUT,
    LOST_OUTCOMES,
    NON200,
    OK,
    REFUSED,
    RESET_NEW,
    TIMEOUT,
    LoadRecorder,
    RouterProcess,
    StandIn,
    finish,
    http_get_status,
    load_loop,
    machine_info,
    print_table,
    raise_fd_limit,
    run_async,
)

PAYLOAD = json.dumps({"instances": [[1.0, 2.0, 3.0]]}).encode()
DRAIN_SECONDS = 2.0


async def one_run(standin: StandIn, keep_alive: bool, concurrency: int, before_sigterm: float) -> dict[str, Any]:
    """Start a router, load it, SIGTERM it, keep loading until it exits; classify everything."""
    spec = {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": standin.url()}]}}}
    router = RouterProcess(spec, drain_seconds=DRAIN_SECONDS)
    await asyncio.to_thread(router.start)
    recorder = LoadRecorder()
    stop = asyncio.Event()
    load = asyncio.create_task(load_loop(router.port, PAYLOAD, concurrency, stop, recorder,
                                         keep_alive=keep_alive, timeout=10.0, hard_deadline=60.0,
                                         refused_pause=0.05))
    readyz: list[tuple[float, int | None]] = []
    try:
        await asyncio.sleep(before_sigterm)
        t_sig = time.monotonic()
        router.send(signal.SIGTERM)
        exited_at = None
        while time.monotonic() - t_sig < 30.0:
            if router.proc is not None and router.proc.poll() is not None:
                exited_at = time.monotonic()
                break
            status = await asyncio.to_thread(http_get_status, "127.0.0.1", router.port, "/readyz", 0.5)
            readyz.append((time.monotonic() - t_sig, status))
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)  # the client keeps trying against the closed port for a moment
    finally:
        stop.set()
        await load
        exit_code = router.stop(timeout=10)
        router.cleanup()

    counts = recorder.counts()
    after_sig = recorder.counts(since=t_sig)
    ok_after_sig = after_sig.get(OK, 0)
    first_refused = min((o.end for o in recorder.outcomes if o.kind == REFUSED and o.start >= t_sig), default=None)
    ready_503 = [t for t, s in readyz if s == 503]
    lost = sum(counts.get(k, 0) for k in LOST_OUTCOMES)
    return {
        "mode": "keep-alive" if keep_alive else "fresh",
        "sent": len(recorder.outcomes),
        "ok": counts.get(OK, 0),
        "ok_after_sigterm": ok_after_sig,
        "refused_before_accept": counts.get(REFUSED, 0),
        "connect_error": counts.get(CONNECT_ERROR, 0),
        "lost": lost,
        "lost_non200": counts.get(NON200, 0),
        "lost_closed_reused": counts.get(CLOSED_REUSED, 0),
        "lost_reset_new": counts.get(RESET_NEW, 0),
        "lost_cut": counts.get(CUT, 0),
        "lost_timeout": counts.get(TIMEOUT, 0),
        "readyz_503_after_s": ready_503[0] if ready_503 else None,
        "listener_closed_after_s": (first_refused - t_sig) if first_refused else None,
        "exited_after_s": (exited_at - t_sig) if exited_at else None,
        "exit_code": exit_code,
        "non200_statuses": sorted({o.status for o in recorder.outcomes if o.kind == NON200}),
        "lost_samples": [x for x in recorder.samples(8) if not x.startswith((REFUSED, CONNECT_ERROR))],
        # When each lost request was sent and ended, in seconds after SIGTERM.
        "lost_at_s": [(round(o.start - t_sig, 3), round(o.end - t_sig, 3)) for o in recorder.outcomes
                      if o.kind in LOST_OUTCOMES],
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    with StandIn(min_ms=50, max_ms=200) as standin:
        for i in range(args.repeat):
            for keep_alive in (True, False):
                r = await one_run(standin, keep_alive, args.concurrency, args.before)
                r["run"] = i + 1
                runs.append(r)
                print(f"  run {i + 1} {r['mode']:10s} sent={r['sent']} ok={r['ok']} lost={r['lost']} "
                      f"refused={r['refused_before_accept']} exit={r['exit_code']}", flush=True)
                for sample in r["lost_samples"]:
                    print(f"    lost: {sample}", flush=True)
                if r["lost_at_s"]:
                    print(f"    lost requests (sent, ended) in s after SIGTERM: {r['lost_at_s'][:5]}", flush=True)
    return {"runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per client mode (default 5)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight (default 32)")
    parser.add_argument("--before", type=float, default=2.0, help="seconds of load before SIGTERM (default 2)")
    parser.add_argument("--quick", action="store_true", help="one run per client mode")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.before = 1, 1.0
    raise_fd_limit()
    info = machine_info()
    print(f"machine: {info['cores']} cores, {info['cpu_model']}, load {info['loadavg_1_5_15']}")
    print(f"SIGTERM under load: {args.concurrency} in flight, stand-in 50-200 ms, --drain-seconds {DRAIN_SECONDS:g}")
    result = run_async(main_async(args))
    runs = result["runs"]
    rows = [[r["run"], r["mode"], r["sent"], r["ok"], r["ok_after_sigterm"], r["refused_before_accept"],
             r["connect_error"], r["lost"], r["lost_closed_reused"], r["lost_reset_new"],
             r["lost_non200"] + r["lost_cut"] + r["lost_timeout"],
             r["readyz_503_after_s"] if r["readyz_503_after_s"] is not None else "-",
             r["listener_closed_after_s"] if r["listener_closed_after_s"] is not None else "-",
             r["exited_after_s"] if r["exited_after_s"] is not None else "-", r["exit_code"]] for r in runs]
    print_table(["run", "client", "sent", "200", "200 after TERM", "refused (never accepted)", "connect err",
                 "LOST", "lost: reused conn closed", "lost: new conn reset", "lost: other",
                 "readyz 503 at s", "listener closed at s", "exited at s", "exit"], rows,
                title="SIGTERM mid-load (times are seconds after SIGTERM)")
    totals = {k: sum(r[k] for r in runs) for k in ("sent", "ok", "refused_before_accept", "lost", "connect_error")}
    print(f"total: sent {totals['sent']}, 200 {totals['ok']}, refused before accept "
          f"{totals['refused_before_accept']}, lost {totals['lost']} (target 0)")
    finish({"test": "sigterm", "drain_seconds": DRAIN_SECONDS, "concurrency": args.concurrency,
               "repeat": args.repeat, "totals": totals, "ok": totals["lost"] == 0 and
               all(r["exit_code"] == 0 for r in runs), "runs": runs, "machine": info})


if __name__ == "__main__":
    main()
