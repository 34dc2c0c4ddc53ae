"""``serve --workers N``: processes sharing the port, signal forwarding, restart of a dead worker."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from conftest import echo
from test_server import free_port


def children(pid: int) -> list[int]:
    """Live child processes of ``pid``, read from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


async def wait_for(predicate: Any, seconds: float = 15.0) -> None:
    for _ in range(int(seconds / 0.1)):
        if predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


async def test_workers_share_port_and_drain_together(start_service: Any) -> None:
    """Two workers answer on one port; a dead worker is replaced; SIGTERM stops them all cleanly."""
    svc = await start_service({"/m": echo})
    port = free_port()
    spec = orjson.dumps({"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceUrl": svc.url("/m")}]}}})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "graph_router", "serve", "--graph-json", spec.decode(), "--host", "127.0.0.1",
        "--port", str(port), "--workers", "2", "--drain-seconds", "0", env={**os.environ},
    )
    try:
        await wait_for(lambda: len(children(proc.pid)) == 2)
        async with aiohttp.ClientSession() as session:
            async def ready() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as resp:
                        return resp.status == 200
                except aiohttp.ClientError:
                    return False

            for _ in range(100):
                if await ready():
                    break
                await asyncio.sleep(0.1)
            for i in range(20):
                async with aiohttp.ClientSession() as fresh, fresh.post(
                    f"http://127.0.0.1:{port}/", data=orjson.dumps({"i": i})
                ) as resp:
                    assert resp.status == 200
                    assert orjson.loads(await resp.read()) == {"i": i}
            victim = children(proc.pid)[0]
            os.kill(victim, signal.SIGKILL)
            await wait_for(lambda: victim not in children(proc.pid) and len(children(proc.pid)) == 2)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        assert children(proc.pid) == []
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
