"""Hot reload under load: the graph file is replaced every 200 ms; no request may fail.

The router runs with ``--reload --graph FILE``. While 16 clients keep requests going,
FILE is rewritten atomically (temporary file + rename) every 200 ms, alternating
between graph A (a two-step Sequence whose answer says ``"graph":"A"``) and graph B
(an Ensemble whose members answer ``"graph":"B"``); every fifth write is an invalid
graph instead (not JSON, Splitter weights summing to 90, a ``nodeName`` of a missing
node, no ``root`` node), which the router must reject while keeping the graph it has.

Then a deterministic check per kind of invalid file: write A (or B), wait until the
answers come from it, write the invalid file, and for 1.5 s (three reload polls) every
answer must still come from the old graph and /readyz must stay 200.

Reported: requests, failures (target 0), answers from A and from B (both expected),
switches seen in the answer stream, /readyz samples that were not 200, and the checks.

    .venv/bin/python loadtests/reload.py            # 60 s of rewrites (the documented run)
    .venv/bin/python loadtests/reload.py --quick    # 10 s
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

from common import (
    OK,
    LoadRecorder,
    NginxBackend,
    Outcome,
    RouterProcess,
    finish,
    http_get_status,
    load_loop,
    machine_info,
    print_table,
    run_async,
    temp_dir,
    write_atomically,
)

PAYLOAD = json.dumps({"instances": [{"modelId": "2"}]}).encode()
REWRITE_EVERY = 0.2


def valid_graphs(backend: NginxBackend) -> dict[str, str]:
    """The two valid graph files, by the tag their answers carry."""
    a = {"nodes": {"root": {"routerType": "Sequence", "steps": [
        {"serviceUrl": backend.url("/a/1")}, {"serviceUrl": backend.url("/a/2"), "data": "$response"},
    ]}}}
    b = {"nodes": {"root": {"routerType": "Ensemble", "steps": [
        {"name": "first", "serviceUrl": backend.url("/b/1")}, {"name": "second", "serviceUrl": backend.url("/b/2")},
    ]}}}
    return {"A": json.dumps(a, indent=1), "B": json.dumps(b, indent=1)}


def invalid_graphs(backend: NginxBackend) -> dict[str, str]:
    """Files the router must refuse, by what is wrong with them."""
    url = backend.url("/a/1")
    return {
        "not-json": '{"nodes": {"root": {"routerType": "Sequence", "steps": [',
        "weights-90": json.dumps({"nodes": {"root": {"routerType": "Splitter", "steps": [
            {"serviceUrl": url, "weight": 45}, {"serviceUrl": url, "weight": 45}]}}}),
        "missing-node": json.dumps({"nodes": {"root": {"routerType": "Sequence", "steps": [
            {"nodeName": "nowhere"}]}}}),
        "no-root": json.dumps({"nodes": {"start": {"routerType": "Sequence", "steps": [{"serviceUrl": url}]}}}),
    }


def tag_of(o: Outcome) -> str:
    """Which graph answered: A, B or '?'."""
    if b'"graph":"A"' in o.body:
        return "A"
    if b'"graph":"B"' in o.body:
        return "B"
    return "?"


async def watch_readyz(port: int, stop: asyncio.Event, samples: list[int | None]) -> None:
    """Sample /readyz every 100 ms until ``stop``."""
    while not stop.is_set():
        samples.append(await asyncio.to_thread(http_get_status, "127.0.0.1", port, "/readyz", 1.0))
        await asyncio.sleep(0.1)


async def rewriter(path: Path, valid: dict[str, str], invalid: dict[str, str], seconds: float,
                   log: list[tuple[float, str]]) -> None:
    """Replace ``path`` every 200 ms for ``seconds``: A, B, A, B, then an invalid file, and so on."""
    bad = list(invalid)
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if n % 5 == 4:
            name = bad[(n // 5) % len(bad)]
            write_atomically(path, invalid[name])
        else:
            name = "AB"[n % 2]
            write_atomically(path, valid[name])
        log.append((time.monotonic(), name))
        n += 1
        await asyncio.sleep(REWRITE_EVERY)


async def keeps_old_graph(path: Path, recorder: LoadRecorder, valid: dict[str, str], good: str,
                          bad_name: str, bad_text: str, readyz: list[int | None]) -> dict[str, Any]:
    """Serve ``good``, then write an invalid file: answers must stay ``good`` for 1.5 s."""
    write_atomically(path, valid[good])
    deadline = time.monotonic() + 5.0
    settled = False
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        recent = [tag_of(o) for o in recorder.outcomes[-20:]]
        if len(recent) == 20 and all(t == good for t in recent):
            settled = True
            break
    t_bad = time.monotonic()
    n_ready = len(readyz)
    write_atomically(path, bad_text)
    await asyncio.sleep(1.5)
    window = [o for o in recorder.outcomes if o.start > t_bad]
    tags: dict[str, int] = {}
    for o in window:
        key = tag_of(o) if o.kind == OK else o.kind
        tags[key] = tags.get(key, 0) + 1
    ready_bad = sum(1 for s in readyz[n_ready:] if s != 200)
    passed = settled and tags.get(good, 0) > 0 and set(tags) == {good} and ready_bad == 0
    return {"invalid": bad_name, "old_graph": good, "settled": settled, "answers": tags,
            "readyz_not_200": ready_bad, "passed": passed}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    with temp_dir() as tmp, NginxBackend({"/a/": '{"graph":"A","predictions":[1]}',
                                          "/b/": '{"graph":"B","predictions":[2]}'}) as backend:
        valid, invalid = valid_graphs(backend), invalid_graphs(backend)
        path = tmp / "graph.json"
        write_atomically(path, valid["A"])
        router = RouterProcess(graph_file=path, reload=True)
        await asyncio.to_thread(router.start)
        recorder = LoadRecorder()
        stop = asyncio.Event()
        readyz: list[int | None] = []
        writes: list[tuple[float, str]] = []
        load = asyncio.create_task(load_loop(router.port, PAYLOAD, args.concurrency, stop, recorder,
                                             timeout=10.0, hard_deadline=args.seconds + 120))
        watcher = asyncio.create_task(watch_readyz(router.port, stop, readyz))
        try:
            t0 = time.monotonic()
            await rewriter(path, valid, invalid, args.seconds, writes)
            t_end = time.monotonic()
            n_ready_rewrite = len(readyz)
            checks = []
            kinds = list(invalid)[:2] if args.quick else list(invalid)
            for i, bad in enumerate(kinds):
                checks.append(await keeps_old_graph(path, recorder, valid, "AB"[i % 2], bad, invalid[bad], readyz))
        finally:
            stop.set()
            await load
            await watcher
            alive = router.proc is not None and router.proc.poll() is None
            log_text = router.log_tail(1_000_000)
            router.cleanup()

    during = [o for o in recorder.outcomes if t0 <= o.start < t_end]
    failed = [o for o in recorder.outcomes if o.kind != OK]
    tags: dict[str, int] = {}
    for o in during:
        if o.kind == OK:
            tags[tag_of(o)] = tags.get(tag_of(o), 0) + 1
    seq = [tag_of(o) for o in sorted(during, key=lambda o: o.end) if o.kind == OK]
    switches = sum(1 for x, y in itertools.pairwise(seq) if x != y)
    n_invalid_writes = sum(1 for _, name in writes if name not in ("A", "B"))
    return {
        "seconds": args.seconds, "rewrite_every_s": REWRITE_EVERY, "concurrency": args.concurrency,
        "writes": len(writes), "invalid_writes": n_invalid_writes,
        "requests": len(recorder.outcomes), "requests_during_rewrites": len(during),
        "failed": len(failed), "failure_kinds": sorted({f"{o.kind}:{o.status}" for o in failed}),
        "failure_samples": recorder.samples(3),
        "answers_A": tags.get("A", 0), "answers_B": tags.get("B", 0), "answers_other": tags.get("?", 0),
        "graph_switches_seen": switches,
        "readyz_samples": len(readyz), "readyz_not_200_during_rewrites": sum(1 for s in readyz[:n_ready_rewrite]
                                                                              if s != 200),
        "rejections_logged": log_text.count("not a valid graph"),
        "invalid_keeps_old": checks, "router_alive": alive,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of rewrites (default 60)")
    parser.add_argument("--concurrency", type=int, default=16, help="client requests in flight (default 16)")
    parser.add_argument("--quick", action="store_true", help="10 s of rewrites, two invalid-file checks")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 10.0
    info = machine_info()
    print(f"machine: {info['cores']} cores, {info['cpu_model']}, load {info['loadavg_1_5_15']}")
    print(f"reload under load: rewrite every {REWRITE_EVERY * 1000:.0f} ms for {args.seconds:g} s, "
          f"{args.concurrency} clients")
    r = run_async(main_async(args))
    print_table(["writes", "invalid", "requests", "FAILED", "from A", "from B", "other", "switches seen",
                 "readyz != 200", "rejections logged"],
                [[r["writes"], r["invalid_writes"], r["requests"], r["failed"], r["answers_A"], r["answers_B"],
                  r["answers_other"], r["graph_switches_seen"], r["readyz_not_200_during_rewrites"],
                  r["rejections_logged"]]],
                title="Rewrites under load")
    print_table(["invalid file", "old graph", "answers in the 1.5 s after", "readyz != 200", "passed"],
                [[c["invalid"], c["old_graph"], json.dumps(c["answers"]), c["readyz_not_200"], c["passed"]]
                 for c in r["invalid_keeps_old"]],
                title="An invalid file keeps the old graph")
    r["ok"] = (r["failed"] == 0 and r["answers_A"] > 0 and r["answers_B"] > 0 and r["answers_other"] == 0
               and all(c["passed"] for c in r["invalid_keeps_old"]) and r["router_alive"])
    for sample in r["failure_samples"]:
        print(f"  failure: {sample}")
    print(f"failed requests: {r['failed']} (target 0); answers from both graphs: "
          f"{r['answers_A'] > 0 and r['answers_B'] > 0}; ok: {r['ok']}")
    finish({"test": "reload", **r, "machine": info})


if __name__ == "__main__":
    main()
