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

from . import __version__
from .commands import UsageError
from .errors import GraphError

LOG_LEVEL_HELP = "logging level: DEBUG, INFO (default), WARNING, ERROR; accepted anywhere on the command line"

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
    parser = argparse.ArgumentParser(
        prog="graph-router",
        description="KServe-compatible InferenceGraph router: serve graphs, run and test them locally, "
        "and keep them resolved in a cluster. With no subcommand and an option first, it serves "
        "(KServe's controller starts it with --graph-json JSON).",
    )
    parser.add_argument("--version", action="version", version=f"graph-router {__version__}")
    parser.add_argument("--log-level", default="INFO", metavar="LEVEL", help=LOG_LEVEL_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    for command in sub.choices.values():
        # main() takes --log-level out of the arguments wherever it is; listed so each --help shows it.
        command.add_argument("--log-level", default="INFO", metavar="LEVEL", help=LOG_LEVEL_HELP)
        command.set_defaults(parser=command)
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
    if args_list and args_list[0].startswith("-") and args_list[0] not in ("-h", "--help", "--version"):
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
    except UsageError as exc:
        args.parser.error(str(exc))  # that subcommand's usage, then the message; exits 2
        return 2
    except GraphError as exc:
        print(f"graph-router: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
