"""Command line: python -m alchemint_core <command> --help."""
from .cli import main

raise SystemExit(main())
