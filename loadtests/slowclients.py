"""1,000 slow clients hold connections open while a normal client keeps being served.

Half the slow clients trickle the request head one byte per second (a long padding
header, so the head never completes); the other half send a whole head announcing a
10,000-byte body and trickle the body a byte per second. A normal client sends a
paced 100 requests/s over 4 kept-alive connections all along. The router's RSS and
open fds are read before, while all slow clients are connected, at the end of the
slow phase and after it. The slow phase lasts longer than the router's read timeout
(KServe's serverRead, 60 s by default), so the router should cut every slow client
off (with a 408) once its request has taken longer than that.

The fd limit of this process is raised (setrlimit) before the router starts, so the
router inherits it as well.

    .venv/bin/python loadtests/slowclients.py           # 10 s before, 75 s slow phase, 10 s after
    .venv/bin/python loadtests/slowclients.py --quick   # serverRead 8 s, 3 s / 12 s / 3 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass
from typing import Any

from common import (
    MIB,
    OK,
    LoadRecorder,
    NginxBackend,
    RouterProcess,
    fd_count,
    finish,
    load_loop,
    machine_info,
    percentile,
    print_table,
    raise_fd_limit,
    run_async,
    summarize_ms,
)

PAYLOAD = json.dumps({"instances": [[1.0, 2.0, 3.0]]}).encode()


@dataclass
class SlowResult:
    """What happened to one slow client."""

    style: str
    connected: bool = False
    first_byte_at: float = 0.0
    closed_by_router_at: float | None = None
    answer: str = ""
    bytes_sent: int = 0


async def slow_client(port: int, style: str, interval: float, stop: asyncio.Event, out: SlowResult) -> None:
    """Open a connection and trickle one byte per ``interval`` until ``stop`` or the router closes it."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    except (OSError, TimeoutError):
        return
    out.connected = True
    head = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            "Content-Length: 10000\r\n").encode()
    if style == "head":
        trickle = head + b"X-Padding: " + b"p" * 4000 + b"\r\n\r\n"
        prefix = b""
    else:
        trickle = b'{"instances": [' + b"1," * 5000
        prefix = head + b"\r\n"
    read_task = asyncio.create_task(reader.read(4096))
    stop_task = asyncio.create_task(stop.wait())
    try:
        await asyncio.sleep(random.uniform(0, interval))
        out.first_byte_at = time.monotonic()
        if prefix:
            writer.write(prefix)
            out.bytes_sent += len(prefix)
        for i in range(len(trickle)):
            if read_task.done() or stop.is_set():
                break
            writer.write(trickle[i:i + 1])
            out.bytes_sent += 1
            try:
                await writer.drain()
            except OSError:
                break
            await asyncio.wait({read_task, stop_task}, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
        if read_task.done():
            out.closed_by_router_at = time.monotonic()
            with contextlib.suppress(Exception):
                data = read_task.result()
                out.answer = data.split(b"\r\n", 1)[0].decode(errors="replace") if data else "closed"
            if not out.answer:
                out.answer = "reset"
    finally:
        for t in (read_task, stop_task):
            t.cancel()
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def phase_stats(recorder: LoadRecorder, since: float, until: float) -> dict[str, Any]:
    """The normal client's figures for requests started in [since, until)."""
    counts = recorder.counts(since, until)
    return {**summarize_ms(recorder.latencies_ms(since, until)), "sent": sum(counts.values()),
            "errors": sum(v for k, v in counts.items() if k != OK)}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": ""}]}}}
    if args.server_read:
        spec["routerTimeouts"] = {"serverRead": args.server_read}
    read_timeout = args.server_read or 60
    with NginxBackend() as backend:
        spec["nodes"]["root"]["steps"][0]["serviceUrl"] = backend.url()
        router = RouterProcess(spec)
        await asyncio.to_thread(router.start)
        mem: dict[str, dict[str, float]] = {}

        def sample(name: str) -> None:
            pids = router.pids()
            mem[name] = {"rss_mib": router.rss() / MIB, "fds": fd_count(pids)}
            print(f"  {name:>8}: router RSS {mem[name]['rss_mib']:.1f} MiB, fds {mem[name]['fds']}", flush=True)

        recorder = LoadRecorder()
        stop_normal = asyncio.Event()
        normal = asyncio.create_task(load_loop(router.port, PAYLOAD, 4, stop_normal, recorder, rate=100.0,
                                               timeout=10.0, hard_deadline=args.before + args.slow + args.after + 120))
        try:
            t0 = time.monotonic()
            await asyncio.sleep(args.before)
            sample("before")
            stop_slow = asyncio.Event()
            results = [SlowResult("head" if i % 2 == 0 else "body") for i in range(args.clients)]
            t_slow = time.monotonic()
            tasks = []
            for i, res in enumerate(results):
                tasks.append(asyncio.create_task(slow_client(router.port, res.style, args.interval, stop_slow, res)))
                if i % 100 == 99:
                    await asyncio.sleep(0.05)  # open them in batches: the accept backlog is finite
            await asyncio.sleep(min(5.0, args.slow / 3))
            t_all = time.monotonic()
            connected = sum(1 for r in results if r.connected)
            print(f"  {connected} of {args.clients} slow clients connected", flush=True)
            sample("during")
            remaining = args.slow - (time.monotonic() - t_slow)
            await asyncio.sleep(max(0.0, remaining))
            sample("slow end")
            t_slow_end = time.monotonic()
            stop_slow.set()
            await asyncio.gather(*tasks)
            await asyncio.sleep(args.after)
            sample("after")
            t_end = time.monotonic()
        finally:
            stop_normal.set()
            await normal
            alive = router.proc is not None and router.proc.poll() is None
            router.cleanup()

    cut = [r for r in results if r.closed_by_router_at is not None]
    cut_after = [r.closed_by_router_at - r.first_byte_at for r in cut if r.closed_by_router_at is not None]
    answers: dict[str, int] = {}
    for r in cut:
        answers[r.answer] = answers.get(r.answer, 0) + 1
    return {
        "clients": args.clients, "interval_s": args.interval, "read_timeout_s": read_timeout,
        "slow_connected": sum(1 for r in results if r.connected),
        "slow_cut_by_router": len(cut), "slow_open_at_slow_end": sum(1 for r in results if r.connected) - len(cut),
        "cut_after_first_byte_s": {"min": min(cut_after, default=0.0), "p50": percentile(cut_after, 50),
                                   "max": max(cut_after, default=0.0)},
        "cut_answers": answers,
        "slow_bytes_sent": sum(r.bytes_sent for r in results),
        "memory": mem,
        "normal": {"before": phase_stats(recorder, t0, t_slow),
                   "during": phase_stats(recorder, t_all, min(t_slow_end, t_slow + read_timeout - 1)),
                   "slow_phase": phase_stats(recorder, t_slow, t_slow_end),
                   "after": phase_stats(recorder, t_slow_end, t_end)},
        "normal_error_samples": recorder.samples(3),
        "router_alive": alive,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000, help="slow clients (default 1000)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between a slow client's bytes")
    parser.add_argument("--before", type=float, default=10.0, help="seconds before the slow clients (default 10)")
    parser.add_argument("--slow", type=float, default=75.0, help="seconds of slow clients (default 75)")
    parser.add_argument("--after", type=float, default=10.0, help="seconds after them (default 10)")
    parser.add_argument("--server-read", type=int, default=0,
                        help="routerTimeouts.serverRead for the graph (default: unset, KServe's 60 s)")
    parser.add_argument("--quick", action="store_true", help="serverRead 8 s; 3 s, 12 s, 3 s")
    args = parser.parse_args()
    if args.quick:
        args.before, args.slow, args.after, args.server_read = 3.0, 12.0, 3.0, 8
    limit = raise_fd_limit(65536)
    info = machine_info()
    print(f"machine: {info['cores']} cores, {info['cpu_model']}, load {info['loadavg_1_5_15']}; fd limit {limit}")
    print(f"{args.clients} slow clients (1 byte / {args.interval:g} s) for {args.slow:g} s; "
          f"normal client 100 req/s")
    r = run_async(main_async(args))
    n = r["normal"]
    print_table(["normal client", "sent", "errors", "p50 ms", "p99 ms", "max ms"],
                [[k, v["sent"], v["errors"], v["p50_ms"], v["p99_ms"], v["max_ms"]] for k, v in n.items()],
                title="Normal requests (during = all slow clients connected, before the read timeout)")
    m = r["memory"]
    print_table(["router", *m.keys()],
                [["RSS MiB", *(v["rss_mib"] for v in m.values())], ["open fds", *(v["fds"] for v in m.values())]],
                title="Router memory and fds")
    c = r["cut_after_first_byte_s"]
    print(f"slow clients: {r['slow_connected']} connected, {r['slow_cut_by_router']} cut off by the router "
          f"(after {c['min']:.1f}-{c['max']:.1f} s, answers {json.dumps(r['cut_answers'])}), "
          f"{r['slow_open_at_slow_end']} still open at the end of the slow phase")
    for sample in r["normal_error_samples"]:
        print(f"  normal request failed: {sample}")
    r["ok"] = (r["slow_connected"] == r["clients"] and all(v["errors"] == 0 for v in n.values())
               and n["during"]["sent"] > 0 and r["router_alive"])
    finish({"test": "slowclients", **r, "fd_limit": limit, "machine": info})


if __name__ == "__main__":
    main()
