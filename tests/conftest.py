"""Shared fixtures: small real datasets on real disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgread.dataset import generate

from .support.helpers import SMALL


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """A generated 12-image dataset of ~50 KB JPEGs; returns its manifest path. Read only."""
    out = tmp_path_factory.mktemp("small") / "ds"
    return generate(out, SMALL, progress=False)
