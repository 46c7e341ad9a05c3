"""``python -m aurora_storage``: the command line (see cli.py)."""

from .cli import main

raise SystemExit(main())
