"""``graph-router demo``: the embedded default pipeline, end to end on loopback."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("demo", help="run the embedded demo pipeline and print its answer")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return asyncio.run(run_demo())
