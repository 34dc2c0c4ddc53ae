"""``graph-router validate FILE...``: every problem of every file, exit 0 only if all pass."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import GraphError
from ..loader import load_graph_file
from ..plan import compile_graph
from ..validation import warnings


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "validate",
        help="check graph files; exit 0 only when all are valid",
        description="Check graph files as `serve --graph` and `run` would: shape, unknown or misspelt fields, "
        "KServe's admission rules and what KServe's router misses (cycles, dangling nodeName, bad GJSON). "
        "Prints one summary line per valid file, every problem (FILE:LINE) of each invalid one, and "
        "warnings (such as a condition that can never match) either way.",
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="YAML or JSON graph files: resources or bare specs")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            graph = load_graph_file(path)
            plan = compile_graph(graph, require_urls=False)
        except GraphError as exc:
            failed += 1
            print(f"{path}: INVALID\n{exc}", file=sys.stderr)
            continue
        kinds = ", ".join(f"{n.name}: {n.kind.value}" for n in plan.nodes.values())
        steps = sum(len(n.steps) for n in plan.nodes.values())
        print(f"{path}: OK graph {plan.name!r}, {len(plan.nodes)} node(s) ({kinds}), {steps} step(s)")
        for warning in warnings(graph):
            print(f"warning: {warning}", file=sys.stderr)
    return 1 if failed else 0
