"""Parsing the Snakefile and a dry run touch nothing (issue "Edges", item 1): every config as
the README and the Makefile run it, dry-run with a PATH where each command the package could
call is a script that records its call; none is called, no imgread-* network namespace or
cgroup appears, and the jobs planned are the grid's trials, the same whatever this machine
could emulate (which storage can be emulated is asked when a real run starts)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.utils import update_config, validate

from imgread.plan.checks import check_config
from imgread.plan.grid import normalize_datasets, trial_grid
from imgread.plan.schema import check_schema, schema_file
from imgread.plan.searches import searches
from imgread.plan.storage import checked_profiles

from ..support.helpers import ROOT, copy_project

pytestmark = pytest.mark.workflow

# As the README and the Makefile run them (--configfile overlays, the default config first).
CONFIGS = {
    "default": [],
    "quick": ["config/quick.yaml"],
    "smoke": ["config/smoke.yaml"],
    "smoke-storage": ["config/smoke.yaml", "config/smoke-storage.yaml"],
    "smoke-data": ["config/smoke.yaml", "config/smoke-data.yaml"],
    "searches": ["config/searches.yaml"],
}
# Every command the package runs (grep subprocess / shutil.which in src/) and the tools of
# storage emulation and cluster set-up it could grow to call, by name.
COMMANDS = [
    "ip", "tc", "nginx", "fio", "tjbench", "sinfo", "sbatch", "srun", "scontrol",
    "mount", "umount", "losetup", "blockdev", "mkfs", "mkfs.ext4", "mkfs.xfs", "dd", "sync",
    "sudo", "su", "mkdir", "rmdir", "nsenter", "unshare", "cgcreate", "systemd-run",
    "iptables", "ethtool", "modprobe", "apt-get", "dnf",
]  # fmt: skip


def _recording_path(folder: Path, log: Path) -> str:
    """A PATH of one folder: each command a script writing its name and arguments to
    ``log`` (and failing), plus the venv's python and snakemake."""
    folder.mkdir()
    for name in COMMANDS:
        script = folder / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit 1\n')
        script.chmod(0o755)
    for name in ("python", "python3", "snakemake"):
        real = Path(sys.executable).parent / name
        if real.exists():
            (folder / name).symlink_to(real)
    return str(folder)


def _netns() -> set[str]:
    done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return {line.split()[0] for line in done.stdout.splitlines() if line.strip()}


def _cgroups() -> set[str]:
    found = set()
    for dirpath, dirnames, _ in os.walk("/sys/fs/cgroup"):
        if dirpath.count(os.sep) > 6:
            dirnames[:] = []
        found.update(os.path.join(dirpath, d) for d in dirnames if d.startswith("imgread"))
    return found


def _ours(names: set[str], pid: int) -> set[str]:
    """The names among ``names`` that carry ``pid`` (imgread-<pid>-..., imgread-trial-<pid>)."""
    return {n for n in names if re.search(rf"imgread-(trial-)?{pid}(\D|$)", os.path.basename(n))}


def _config(files: list[str]) -> dict:
    """The config as common.smk reads it: config.yaml, the files merged in order, checked."""
    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    for name in files:
        update_config(config, yaml.safe_load((ROOT / name).read_text()))
    schema = ROOT / "config/schema.yaml"
    normalize_datasets(config)
    check_schema(config, schema)
    validate(config, schema_file(schema), set_default=True)
    check_config(config)
    return config


def _planned(text: str) -> dict[str, list[str]]:
    """{rule: the outputs of its planned jobs} from a dry run's job list."""
    out: dict[str, list[str]] = {}
    rule = None
    for line in text.splitlines():
        line = line.strip()
        if match := re.match(r"^(?:localrule|rule) (\w+):$", line):
            rule = match.group(1)
        elif line.startswith("output: ") and rule:
            out.setdefault(rule, []).extend(line.removeprefix("output: ").split(", "))
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return copy_project(tmp_path_factory.mktemp("dry") / "imgread")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_a_dry_run_runs_nothing_and_plans_the_grid(name, project, tmp_path):
    files = CONFIGS[name]
    log = tmp_path / "called.log"
    env = {
        **os.environ,
        "PATH": _recording_path(tmp_path / "bin", log),
        "PYTHONPATH": str(ROOT / "src"),
    }
    netns, cgroups = _netns(), _cgroups()
    args = ["-n", "--cores", "1", "--quiet", "progress"]
    args += ["--configfile", *files] if files else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", *args],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-4000:]
    assert not log.exists(), f"commands run while planning: {log.read_text()}"
    # A kind's check names what it makes by its process (imgread-<pid>-...): other tests
    # running beside this one make their own, so only the dry run's process counts.
    assert _ours(_netns() - netns, proc.pid) == set()
    assert _ours(_cgroups() - cgroups, proc.pid) == set()
    config = _config(files)
    planned = _planned(stdout)
    trials = sorted(planned.get("trial", []) + planned.get("trial_on", []))
    assert trials == sorted(c.path("results/trials") for c in trial_grid(config))
    checks = sorted(planned.get("storage_check", []))
    assert checks == sorted(f"results/storage/{p}.json" for p in checked_profiles(config))
    # each of the config's searches one job (docs/searches.md), planned and not run
    assert sorted(planned.get("search", [])) == sorted(s.output() for s in searches(config))
