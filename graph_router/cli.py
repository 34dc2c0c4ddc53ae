"""``graph-router``: the command line.

Each subcommand lives beside the code it drives and registers itself through a
``register(subparsers)`` function listed in ``COMMANDS``; this module only dispatches.

KServe's controller starts its router with ``--graph-json JSON`` and no subcommand, so
an argument list that starts with an option is taken as ``serve``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from .errors import GraphError

# Modules that each define ``register(subparsers)``; order is the order of --help.
COMMANDS: tuple[str, ...] = (
    "graph_router.commands.serve",
    "graph_router.commands.controller",
    "graph_router.commands.validate",
    "graph_router.commands.demo",
    "graph_router.commands.run",
    "graph_router.commands.graph",
    "graph_router.commands.test",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graph-router", description="KServe-compatible InferenceGraph router")
    parser.add_argument("--log-level", default="INFO", help="logging level, accepted anywhere (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def _pop_option(args: list[str], option: str) -> str | None:
    """Remove ``option VALUE`` or ``option=VALUE`` from anywhere in ``args``; return VALUE."""
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            value = args[i + 1]
            del args[i : i + 2]
            return value
        if arg.startswith(option + "="):
            del args[i]
            return arg.split("=", 1)[1]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    log_level = _pop_option(args_list, "--log-level") or "INFO"
    if args_list and args_list[0].startswith("-") and args_list[0] not in ("-h", "--help", "--log-level"):
        args_list = ["serve", *args_list]
    args = build_parser().parse_args(args_list)
    args.argv = [*args_list, "--log-level", log_level]  # for commands that start copies of themselves
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    run: Callable[[argparse.Namespace], int] = args.func
    try:
        return run(args)
    except GraphError as exc:
        print(f"graph-router: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
