"""Entry point for ``python -m imgread``."""

from imgread.cli import main

raise SystemExit(main())
