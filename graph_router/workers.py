"""``serve --workers N``: N router processes sharing one port.

Python runs one thread of code at a time, so a busy router scales across cores with
processes. Each worker is the same command line started again (a fresh interpreter,
not a fork, so no event loop or socket state is inherited) and binds the port with
SO_REUSEPORT; the kernel spreads connections over them. The supervisor forwards
SIGTERM/SIGINT so every worker drains as one router would, and restarts a worker that
dies on its own (after a short pause, so a crash loop cannot spin).

A worker that dies before it listens (the port is taken, the address is not ours) would
die the same way again, so the supervisor gives up instead of restarting it: it stops
the others and exits with that worker's status. Worker 0 starts alone first, so a
mistake every worker would make is reported once, by one worker. A worker says it
listens by writing to a pipe whose descriptor it finds in ``GRAPH_ROUTER_READY_FD``.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from .telemetry import WorkerGroup

logger = logging.getLogger(__name__)

WORKER_FLAG = "--worker-process"
READY_FD_ENV = "GRAPH_ROUTER_READY_FD"
RESTART_PAUSE_SECONDS = 1.0
POLL_SECONDS = 0.1


class _Worker:
    """One worker process and the read end of the pipe it reports readiness on."""

    def __init__(self, command: Sequence[str], env: dict[str, str]) -> None:
        read, write = os.pipe()
        self.proc = subprocess.Popen(command, env={**env, READY_FD_ENV: str(write)}, pass_fds=(write,))
        os.close(write)
        self._read: int | None = read
        self.ready = False

    def check_ready(self) -> bool:
        """Whether the worker has said it listens (non-blocking)."""
        if self._read is not None and select.select([self._read], [], [], 0)[0]:
            self.ready = os.read(self._read, 1) == b"1"
            os.close(self._read)
            self._read = None
        return self.ready

    def close(self) -> None:
        if self._read is not None:
            os.close(self._read)
            self._read = None


def supervise(argv: Sequence[str], workers: int, *, drain_seconds: float = 0.0) -> int:
    """Run ``workers`` copies of ``graph-router <argv> --worker-process``; return the worst exit status."""
    command = [sys.executable, "-m", "graph_router", *argv, WORKER_FLAG]
    # Each worker learns its place in the group, so /metrics on any of them adds up all.
    group = WorkerGroup.new(workers)
    envs = [{**os.environ, **group.environ(i)} for i in range(workers)]
    procs: list[_Worker] = []
    stopping = False
    signals = 0

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping, signals
        stopping = True
        signals += 1
        if signals == 1 and drain_seconds > 0 and sys.stderr.isatty():
            from .commands.serve import draining_hint

            print(draining_hint(drain_seconds), file=sys.stderr, flush=True)
        for w in procs:
            if w.proc.poll() is None:
                w.proc.send_signal(signum)

    def stop_all() -> None:
        """Stop every worker now: a second SIGTERM skips a worker's drain."""
        for _ in range(2):
            for w in procs:
                if w.proc.poll() is None:
                    w.proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)
        for w in procs:
            try:
                w.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for i in range(workers):
            if stopping:
                break
            procs.append(_Worker(command, envs[i]))
            # Worker 0 alone first: a mistake all would make (a taken port) is said once.
            while i == 0 and not stopping and not procs[0].check_ready() and procs[0].proc.poll() is None:
                time.sleep(POLL_SECONDS)
        logged_start = False
        while True:
            alive = False
            for i, w in enumerate(procs):
                w.check_ready()
                code = w.proc.poll()
                if code is None:
                    alive = True
                    continue
                if stopping:
                    continue
                if not w.ready:
                    logger.debug("worker %d exited with status %s before it listened; giving up", w.proc.pid, code)
                    stopping = True
                    stop_all()
                    return code or 1
                logger.error("worker %d exited with status %s; restarting it", w.proc.pid, code)
                w.close()
                time.sleep(RESTART_PAUSE_SECONDS)
                procs[i] = _Worker(command, envs[i])
                alive = True
            if not alive:
                break
            if not logged_start and all(w.ready for w in procs):
                logged_start = True
                logger.info("started %d workers: %s", workers, [w.proc.pid for w in procs])
            time.sleep(POLL_SECONDS)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for w in procs:
            w.close()
    return max((w.proc.returncode or 0) for w in procs)
