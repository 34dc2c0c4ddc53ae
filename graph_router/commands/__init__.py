"""One module per ``graph-router`` subcommand, each with ``register(subparsers)``."""
