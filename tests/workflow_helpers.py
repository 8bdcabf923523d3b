"""Run the real workflow in a temporary copy of the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".venv", ".git", ".snakemake", "results", "__pycache__", ".pytest_cache", ".ruff_cache"}


def copy_project(dest: Path) -> Path:
    """Copy the project's sources (not results, caches or the venv) to ``dest``."""

    def ignore(folder, names):
        return [n for n in names if n in SKIP or n.endswith(".egg-info")]

    shutil.copytree(ROOT, dest, ignore=ignore)
    (dest / "results").mkdir(exist_ok=True)
    return dest


def snakemake(
    workdir: Path, *args: str, timeout: int = 600, check: bool = True, env: dict | None = None
):
    """Run ``python -m snakemake ARGS`` in ``workdir`` (``env``: variables to change);
    return the CompletedProcess."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n"
            f"{proc.stderr[-6000:]}"
        )
    return proc


def path_without(tmp_path: Path, command: str) -> str:
    """A PATH with every command of this one except ``command`` (one folder of links)."""
    bin_dir = tmp_path / f"bin-without-{command}"
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            link = bin_dir / name
            if name != command and not link.exists():
                link.symlink_to(Path(folder) / name)
    return str(bin_dir)
