"""The per-event cost of tallying a streamed OpenAI answer (issue 15: at most 2 µs per event).

A chat-completions stream in vLLM's shape (one ``data:`` event per token, about 190
bytes each, then the usage chunk and ``[DONE]``) is fed through
:class:`graph_router.llm.sse.UsageStream` in-process, one event per read (the worst
case: every read pays the per-read work), and through the same loop with no tally
(the pass-through a non-OpenAI step gets). The difference per event is the feature's
cost. Three modes: the client asked for usage itself (no stripping), the router asked
(the usage chunk is taken out), and reads of 8 events each.

    .venv/bin/python loadtests/sse_events.py [--events 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import orjson
from common import emit_json, machine_info, print_table

from graph_router import compiled_modules
from graph_router.llm.step import StepTally
from graph_router.upstream import StepStream


def events(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        chunk = {"id": "chatcmpl-5f1b0c", "object": "chat.completion.chunk", "created": 1733000000,
                 "model": "qwen2.5-7b-instruct", "choices": [{"index": 0, "delta": {"content": f" w{i % 97}"},
                                                              "logprobs": None, "finish_reason": None}]}
        out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
    usage = {"id": "chatcmpl-5f1b0c", "object": "chat.completion.chunk", "created": 1733000000,
             "model": "qwen2.5-7b-instruct", "choices": [],
             "usage": {"prompt_tokens": 812, "completion_tokens": n, "total_tokens": 812 + n}}
    out.append(b"data: " + orjson.dumps(usage) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out


class Reads(StepStream):
    """A step stream handing out prepared reads (no network: only the tally's work is measured)."""

    def __init__(self, reads: list[bytes]) -> None:
        self._reads = iter(reads)

    async def __anext__(self) -> bytes:
        try:
            return next(self._reads)
        except StopIteration:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        return None


async def drain(stream: Any) -> int:
    total = 0
    async for chunk in stream:
        total += len(chunk)
    return total


def measure(reads: list[bytes], tallied: bool, strip: bool, rounds: int) -> float:
    """Best-of-``rounds`` seconds to pass every read through."""
    from graph_router.llm.sse import UsageStream

    best = float("inf")
    loop = asyncio.new_event_loop()
    try:
        for _ in range(rounds):
            inner = Reads(reads)
            stream: Any = UsageStream(inner, StepTally(None, None, time.perf_counter()), strip, True) \
                if tallied else inner
            started = time.perf_counter()
            loop.run_until_complete(drain(stream))
            best = min(best, time.perf_counter() - started)
    finally:
        loop.close()
    return best


def main(n: int, rounds: int) -> dict[str, Any]:
    evs = events(n)
    grouped = [b"".join(evs[i:i + 8]) for i in range(0, len(evs), 8)]
    rows = []
    result: dict[str, Any] = {"events": n, "compiled": bool(compiled_modules()), "machine": machine_info()}
    for name, reads, strip in (("one event per read, client asked for usage", evs, False),
                               ("one event per read, router asked (usage chunk removed)", evs, True),
                               ("8 events per read, router asked", grouped, True)):
        base = measure(reads, False, False, rounds)
        tallied = measure(reads, True, strip, rounds)
        per_event = (tallied - base) / len(evs) * 1e6
        rows.append([name, f"{base / len(evs) * 1e6:.2f}", f"{tallied / len(evs) * 1e6:.2f}", f"{per_event:.2f}"])
        result[name] = {"passthrough_us": base / len(evs) * 1e6, "tallied_us": tallied / len(evs) * 1e6,
                        "added_us_per_event": per_event}
    print_table(["stream", "pass-through µs/event", "tallied µs/event", "added µs/event (target ≤ 2)"], rows,
                title=f"UsageStream per-event cost, {n} events, best of {rounds}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    emit_json(main(args.events, args.rounds))
