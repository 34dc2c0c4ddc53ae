"""One module per ``graph-router`` subcommand, each with ``register(subparsers)``."""

from __future__ import annotations

from ..errors import GraphError


class UsageError(GraphError):
    """A mistake in the command's arguments found after parsing: shown with the subcommand's usage."""
