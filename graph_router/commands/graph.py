"""``graph-router graph GRAPH --format mermaid|dot``: the graph drawn, for reviews and READMEs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import GraphError
from ..loader import load_graph_file
from ..plan import compile_graph


def register(sub: Any) -> None:
    from ..localtest.render import FORMATS

    p: argparse.ArgumentParser = sub.add_parser(
        "graph",
        help="draw a graph as Mermaid or Graphviz dot (node kinds, conditions, weights, dependencies)",
        description="Draw GRAPH: a box per node and step, edges labelled with the data each step gets, its "
        "condition, weight or Hard dependency, and graph_router's extensions (templates, policies, streaming).",
    )
    p.add_argument("graph", metavar="GRAPH", help="a YAML or JSON file: an InferenceGraph resource or a bare spec")
    p.add_argument("--format", "-f", choices=FORMATS, default="mermaid", help="output format (default mermaid)")
    p.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..localtest.render import render

    graph = load_graph_file(args.graph)
    compile_graph(graph, require_urls=False)  # a drawing of a graph that cannot run would mislead
    text = render(graph, args.format)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise GraphError(f"--output {args.output}: cannot write: {exc.strerror or exc}") from exc
    else:
        sys.stdout.write(text)
    return 0
