"""Uploads abandoned mid-body must not cost memory: RSS after N of them, one at a time.

Each client declares a 30 MiB body, sends 20 MiB of it and resets the connection. The
router must free each buffer when its connection is lost, not when the cycle collector
runs (``serve`` freezes the collector's generations at start). Target (issue 12): RSS
stays within 50 MiB of its start after 40 uploads.

    .venv/bin/python loadtests/abandoned_uploads.py            # 40 uploads
    .venv/bin/python loadtests/abandoned_uploads.py --quick    # 8 uploads
"""

from __future__ import annotations

import argparse
import asyncio

from common import HOST, MIB, RouterProcess, finish, rss_bytes

GRAPH = {"nodes": {"root": {"routerType": "Sequence", "steps": [
    {"serviceUrl": f"http://{HOST}:9/v1/models/m:predict"}]}}}  # never called: no body completes


async def abandon(port: int, declared: int, sent: int) -> None:
    _, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % declared)
    piece = b"x" * MIB
    for _ in range(sent // MIB):
        writer.write(piece)
        await writer.drain()
    await asyncio.sleep(0.05)  # let the router read what was sent
    writer.transport.abort()
    await asyncio.sleep(0.05)


async def run(uploads: int) -> dict[str, object]:
    router = RouterProcess(GRAPH).start()
    try:
        pids = router.pids()
        start = rss_bytes(pids) / MIB
        peak = start
        for _ in range(uploads):
            await abandon(router.port, 30 * MIB, 20 * MIB)
            peak = max(peak, rss_bytes(pids) / MIB)
        await asyncio.sleep(0.5)
        end = rss_bytes(pids) / MIB
    finally:
        router.stop()
    print(f"uploads {uploads}: RSS {start:.1f} MiB at start, {peak:.1f} MiB at the peak, {end:.1f} MiB after")
    return {"uploads": uploads, "rss_start_mib": round(start, 1), "rss_peak_mib": round(peak, 1),
            "rss_end_mib": round(end, 1), "ok": end - start <= 50}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="8 uploads instead of 40")
    args = ap.parse_args()
    finish(asyncio.run(run(8 if args.quick else 40)))


if __name__ == "__main__":
    main()
