"""``serve --workers N``: N router processes sharing one port.

Python runs one thread of code at a time, so a busy router scales across cores with
processes. Each worker is the same command line started again (a fresh interpreter,
not a fork, so no event loop or socket state is inherited) and binds the port with
SO_REUSEPORT; the kernel spreads connections over them. The supervisor forwards
SIGTERM/SIGINT so every worker drains as one router would, and restarts a worker that
dies on its own (after a short pause, so a crash loop cannot spin).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from .telemetry import WorkerGroup

logger = logging.getLogger(__name__)

WORKER_FLAG = "--worker-process"
RESTART_PAUSE_SECONDS = 1.0


def supervise(argv: Sequence[str], workers: int) -> int:
    """Run ``workers`` copies of ``graph-router <argv> --worker-process``; return the worst exit status."""
    command = [sys.executable, "-m", "graph_router", *argv, WORKER_FLAG]
    # Each worker learns its place in the group, so /metrics on any of them adds up all.
    group = WorkerGroup.new(workers)
    envs = [{**os.environ, **group.environ(i)} for i in range(workers)]
    procs: list[subprocess.Popen[bytes]] = [subprocess.Popen(command, env=envs[i]) for i in range(workers)]
    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    logger.info("started %d workers: %s", workers, [p.pid for p in procs])
    try:
        while True:
            alive = False
            for i, p in enumerate(procs):
                code = p.poll()
                if code is None:
                    alive = True
                elif not stopping:
                    logger.error("worker %d exited with status %s; restarting it", p.pid, code)
                    time.sleep(RESTART_PAUSE_SECONDS)
                    procs[i] = subprocess.Popen(command, env=envs[i])
                    alive = True
            if not alive:
                break
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return max((p.returncode or 0) for p in procs)
