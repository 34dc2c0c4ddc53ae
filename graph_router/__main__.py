"""``python -m graph_router`` runs the CLI."""

import sys

from .cli import main

sys.exit(main())
