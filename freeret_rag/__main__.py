"""`python -m freeret_rag ...`: the command line (see cli.py)."""

from .cli import main

raise SystemExit(main())
