"""``graph-router validate FILE...``: every problem of every file, exit 0 only if all pass."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import GraphError
from ..loader import load_graph_file
from ..plan import compile_graph


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("validate", help="check graph files; exit 0 only when all are valid")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            plan = compile_graph(load_graph_file(path), require_urls=False)
        except GraphError as exc:
            failed += 1
            print(f"{path}: INVALID\n{exc}", file=sys.stderr)
            continue
        kinds = ", ".join(f"{n.name}: {n.kind.value}" for n in plan.nodes.values())
        steps = sum(len(n.steps) for n in plan.nodes.values())
        print(f"{path}: OK graph {plan.name!r}, {len(plan.nodes)} node(s) ({kinds}), {steps} step(s)")
    return 1 if failed else 0
