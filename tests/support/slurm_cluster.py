"""A throwaway single-node SLURM cluster on localhost, for `make test-slurm`.

Writes slurm.conf (two partitions over the one node, no accounting) under a temporary folder,
starts munged, slurmctld and slurmd there with their own sockets, ports, PID and log files,
waits for the node to be idle, and stops exactly the processes it started. Needs root (slurmd
runs jobs as their user) and the Debian packages slurm-wlm and munge.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

PARTITIONS = ("fast", "slow")  # one node in both: two "machine types" on one machine
RUN_CONF = Path("/run/slurm/conf")
NEEDED = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")


def missing_commands() -> list[str]:
    """The SLURM/munge commands not found (on PATH or in /usr/sbin)."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    return [c for c in NEEDED if shutil.which(c, path=path) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024 - 1024  # leave the OS a GB
    return 1024


def write_config(folder: Path, node: str, munge_socket: Path) -> Path:
    """slurm.conf for one node (this machine) in PARTITIONS; returns its path."""
    for sub in ("state", "spool", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    cpus = os.cpu_count() or 1
    ctld_port = _free_port()
    lines = [
        "ClusterName=imgread-test",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={_free_port()}",
        "AuthType=auth/munge",
        f"AuthInfo=socket={munge_socket}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "MpiDefault=none",
        "ReturnToService=2",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        "SchedulerParameters=sched_interval=1",
        "MessageTimeout=30",
        "MinJobAge=3600",  # finished jobs stay in `scontrol show job` for the test to read
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'log/slurmctld.log'}",
        f"SlurmdLogFile={folder / 'log/slurmd.log'}",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={_memory_mb()} State=UNKNOWN",
    ]
    for i, name in enumerate(PARTITIONS):
        default = "YES" if i == 0 else "NO"
        lines.append(
            f"PartitionName={name} Nodes={node} Default={default} MaxTime=INFINITE State=UP"
        )
    conf = folder / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    (folder / "ctld.port").write_text(str(ctld_port))
    return conf


def _wait(what: str, ok, timeout: float = 60.0, logs: list[Path] | None = None) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if ok():
            return
        time.sleep(0.5)
    tails = "".join(
        f"\n--- {p}:\n{p.read_text(errors='replace')[-2000:]}" for p in logs or [] if p.exists()
    )
    raise RuntimeError(f"local SLURM: {what} not ready after {timeout:.0f} s{tails}")


@contextmanager
def local_cluster(folder: Path):
    """Start munged, slurmctld and slurmd under ``folder``; yield the environment (SLURM_CONF,
    PATH) that points SLURM commands at it; stop exactly those daemons afterwards."""
    if os.geteuid() != 0:
        raise RuntimeError("the local SLURM cluster needs root (slurmd starts jobs as users)")
    folder.mkdir(parents=True, exist_ok=True)
    node = socket.gethostname().split(".")[0]
    sock = folder / "munge.socket"
    conf = write_config(folder, node, sock)
    env = dict(os.environ, SLURM_CONF=str(conf))
    env["PATH"] = env.get("PATH", "") + os.pathsep + "/usr/sbin" + os.pathsep + "/sbin"
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    started: list[subprocess.Popen] = []
    # Commands inside a job run without SLURM_CONF (the plugin's srun drops SLURM_* from its
    # environment) and find the config where a configless slurmd puts it: /run/slurm/conf.
    # Linked there for the test's lifetime (never /etc/slurm), removed afterwards.
    if RUN_CONF.exists() or RUN_CONF.is_symlink():
        raise RuntimeError(f"{RUN_CONF} exists: a slurmd seems to run here already")
    made_parent = not RUN_CONF.parent.exists()
    RUN_CONF.parent.mkdir(parents=True, exist_ok=True)
    RUN_CONF.symlink_to(folder)
    logs = [folder / "log/munged.log", folder / "log/slurmctld.log", folder / "log/slurmd.log"]
    try:
        started.append(
            subprocess.Popen(
                [
                    "munged",
                    "--foreground",
                    "--force",
                    f"--socket={sock}",
                    f"--key-file={key}",
                    f"--pid-file={folder / 'munged.pid'}",
                    f"--log-file={logs[0]}",
                    f"--seed-file={folder / 'munge.seed'}",
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
        )
        _wait("munged", sock.exists, logs=logs)
        out = (folder / "log/daemons.out").open("w")
        started.append(
            subprocess.Popen(
                ["slurmctld", "-D", "-f", str(conf)], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        )
        started.append(
            subprocess.Popen(
                ["slurmd", "-D", "-f", str(conf), "-N", node],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        )

        def idle() -> bool:
            out = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%t"], env=env, capture_output=True, text=True
            )
            return out.returncode == 0 and out.stdout.strip().startswith("idle")

        _wait("the node (sinfo: idle)", idle, timeout=90, logs=logs)
        yield env
    finally:
        RUN_CONF.unlink(missing_ok=True)
        if made_parent:
            RUN_CONF.parent.rmdir()
        for proc in reversed(started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(started):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def job_times(env: dict, job_ids) -> dict[str, dict[str, datetime]]:
    """{job id: SubmitTime, StartTime, EndTime} from `scontrol show job` (no accounting)."""
    out = {}
    for job in sorted({str(j) for j in job_ids}):
        text = subprocess.run(
            ["scontrol", "show", "job", "-o", job], env=env, capture_output=True, text=True
        ).stdout
        fields = dict(kv.split("=", 1) for kv in text.split() if "=" in kv)
        if "SubmitTime" not in fields:
            continue
        out[job] = {
            k: datetime.fromisoformat(fields[k]) for k in ("SubmitTime", "StartTime", "EndTime")
        }
    return out
