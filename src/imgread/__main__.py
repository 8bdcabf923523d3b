"""Entry point for ``python -m imgread``."""

from imgread.cli.main import main

raise SystemExit(main())
