"""Put this checkout's src/ first on sys.path, so every rule runs this checkout's imgread
(in the venv, in a conda env from envs/, or on a cluster node) without installing it there."""

import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2] / "src")
if SRC not in sys.path:
    sys.path.insert(0, SRC)
