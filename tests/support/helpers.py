"""Helpers shared by the tests (plain functions; the fixtures are in conftest.py).

Datasets and files: the small dataset's parameters, a messy photo folder, a corrupted image, a
folder's state, Python's shared-memory segments. Trial processes: run ``imgread trial`` as a
real process (``prelude``: code run first in it), find its worker processes (a worker's death:
tests/support/deaths.py). Workflow: run the real workflow in a temporary copy of the project.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from imgread.dataset import GenerateParams
from imgread.storage.volume.cgroup import leftovers

# The small_dataset fixture's 12 images of ~50 KB
SMALL = GenerateParams(count=12, width=320, height=240, target_bytes=50_000, seed=3)
SHM = Path("/dev/shm")
HAVE_PROC = Path("/proc/self/task").exists()
ROOT = Path(__file__).resolve().parents[2]  # the project (tests/support/helpers.py)
# What copy_project leaves out (and any *.egg-info)
SKIP = {".venv", ".git", ".snakemake", "results", "__pycache__", ".pytest_cache", ".ruff_cache"}


# --------------------------------------------------------------------------- files


def tree_state(root: Path) -> dict:
    """Every entry's digest (files), mode and mtime under root, links not followed."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            digest = None
            if p.is_file() and not p.is_symlink() and st.st_mode & 0o444:
                try:
                    digest = hashlib.sha256(p.read_bytes()).hexdigest()
                except PermissionError:
                    digest = "unreadable"
            state[str(p.relative_to(root))] = (digest, st.st_mode, st.st_mtime_ns)
    return state


def photo(seed: int, size=(64, 48)) -> Image.Image:
    """A smooth photo-like RGB image (a random 8x8-block image, upscaled)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return Image.fromarray(base).resize(size, Image.Resampling.BICUBIC)


def damaged_jpeg(path: Path, seed: int, size=(320, 240)) -> Path:
    """A photo with three bits flipped in its entropy-coded data: Pillow (and OpenCV) still decode
    it, strict decoders (simplejpeg, turbojpeg) refuse it ("Corrupt JPEG data ...") for seeds
    0, 1, 3 and 4 (not 2 or 5: there the flips land where the strict decoders do not look)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=85)
    data = bytearray(buf.getvalue())
    for at in (len(data) // 3, len(data) // 2, 2 * len(data) // 3):
        data[at] ^= 0x10
    path.write_bytes(bytes(data))
    return path


def make_messy_folder(root: Path) -> dict[str, str]:
    """A user's folder with everything in it; returns {relative path: 'valid' | reason-ish}."""
    (root / "nested" / "deeper").mkdir(parents=True)
    kinds = {}

    def save(rel, img, kind="valid", **kw):
        img.save(root / rel, **kw)
        kinds[rel] = kind

    save("plain rgb.jpg", photo(1), format="JPEG")
    save("nested/ünïcödé photo.JPEG", photo(2), format="JPEG")
    save("nested/deeper/cmyk.jpg", photo(3).convert("CMYK"), format="JPEG")
    save("grey.jpg", photo(4).convert("L"), format="JPEG")
    save("progressive.jpg", photo(5), format="JPEG", progressive=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    save("rotated.jpg", photo(6), format="JPEG", exif=exif.tobytes())
    save("palette.png", photo(7).convert("P"), kind="png", format="PNG")
    good = io.BytesIO()
    photo(8).save(good, format="JPEG")
    (root / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 3])
    kinds["truncated.jpg"] = "invalid"
    (root / "empty.jpg").write_bytes(b"")
    kinds["empty.jpg"] = "invalid"
    (root / "notes.jpg").write_text("this is not an image\n")
    kinds["notes.jpg"] = "invalid"
    os.symlink("..", root / "nested" / "loop")  # a folder loop: must not be followed
    os.symlink("self.jpg", root / "self.jpg")  # a file loop: cannot be opened
    kinds["self.jpg"] = "invalid"
    photo(9).save(root / "locked.jpg", format="JPEG")
    os.chmod(root / "locked.jpg", 0)
    kinds["locked.jpg"] = "unreadable"  # unreadable only for a non-root user
    return kinds


def corrupt_keeping_size_and_mtime(path: Path) -> None:
    """Break the JPEG's start marker, keeping its size and mtime (the cheap checks pass)."""
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[0:2] = b"XX"  # no JPEG start-of-image marker any more
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def segments() -> set[str]:
    """Python's shared-memory segments (SharedMemory names them psm_*)."""
    return {p.name for p in SHM.iterdir() if p.name.startswith("psm_")}


# --------------------------------------------------------------------------- trial processes


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (all its threads'), from /proc."""
    kids = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return []  # the process has ended
    for task in tasks:
        try:
            kids.extend(int(k) for k in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended between the listing and the read
    return kids


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # gone, or gone between open and read
        return False
    return state != "Z"


def is_tracker(pid: int) -> bool:
    """multiprocessing's resource tracker is a child too; it is not a pool worker."""
    try:
        return b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


def trial_command(manifest, out, *args: str, prelude: str | None = None) -> list[str]:
    """``imgread trial --manifest M ARGS --out OUT`` as an argument list; with ``prelude``,
    that Python code runs first in the trial's process (``python -c``)."""
    python = [sys.executable, "-m", "imgread"]
    if prelude is not None:
        python = [sys.executable, "-c", f"{prelude}\n{_RUN_CLI}"]
    return [*python, "trial", "--manifest", str(manifest), *args, "--out", str(out)]


_RUN_CLI = "import sys\nfrom imgread.cli.main import main\nsys.exit(main(sys.argv[1:]))"


def run_trial_cli(manifest, out, *args: str, check: bool = False):
    """Run ``imgread trial`` to its end; the CompletedProcess, output captured as text."""
    return subprocess.run(
        trial_command(manifest, out, *args), capture_output=True, text=True, check=check
    )


def start_trial(
    manifest, out, *args: str, prelude: str | None = None, tmpdir: Path | None = None
) -> subprocess.Popen:
    """``imgread trial`` started in its own session and process group (as a terminal starts a
    command), output captured; ``tmpdir``: its TMPDIR (made), to find temporary files left."""
    env = None
    if tmpdir is not None:
        tmpdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TMPDIR": str(tmpdir)}
    return subprocess.Popen(
        trial_command(manifest, out, *args, prelude=prelude),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
        # Ctrl-C as a terminal delivers it, also where the tests themselves were started in the
        # background (a non-interactive shell's `cmd &` ignores SIGINT, and children inherit it)
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_workers(
    proc: subprocess.Popen,
    settle: float,
    want: int = 2,
    ready: Callable[[], bool] = lambda: True,
    timeout: float = 90,
) -> list[int]:
    """Wait until ``proc`` has ``want`` live workers (and ``ready()``), then ``settle`` seconds
    more, into the timed work; return the workers alive then (children seen early may be
    short-lived helpers that libraries start). Fails if the trial already ended."""

    def live() -> list[int]:
        return [k for k in children(proc.pid) if alive(k) and not is_tracker(k)]

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if len(live()) >= want and ready():
            break
        time.sleep(0.02)
    if proc.poll() is not None:
        raise AssertionError(f"the trial ended first (status {proc.returncode}):\n{_stderr(proc)}")
    assert len(live()) >= want and ready(), "the trial never started its workers"
    time.sleep(settle)
    workers = live()
    assert proc.poll() is None, "the trial ended before it could be interrupted"
    assert len(workers) >= want, f"only {len(workers)} workers alive after {settle} s"
    return workers


def _stderr(proc: subprocess.Popen) -> str:
    try:
        return proc.communicate(timeout=10)[1]
    except subprocess.TimeoutExpired:  # a process it started holds its output
        kill_session(proc)
        return proc.communicate()[1]


def emulation_of(pid: int | None = None) -> dict[str, list[str]]:
    """What of the storage emulation (imgread.storage) carries trial ``pid``'s name (None: any
    process's): network namespaces, veth links, the volume kind's cgroups (v1 or v2) and nginx
    processes."""
    tag = "" if pid is None else f"{pid}-"
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    nginx = subprocess.run(["pgrep", "-f", f"imgread-http-{tag}"], capture_output=True, text=True)
    link = f"imr{'' if pid is None else pid}"
    return {
        "netns": [w for w in netns.split() if w.startswith(f"imgread-{tag}")],
        "links": [x.split(":")[1].strip() for x in links.splitlines() if f": {link}" in x],
        "cgroups": sorted(str(f) for f, _ in leftovers() if f.name.startswith(f"imgread-{tag}")),
        "nginx": nginx.stdout.split(),
    }


NOTHING = {"netns": [], "links": [], "cgroups": [], "nginx": []}


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL whatever is left of the trial's process group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def left_alive(workers: list[int]) -> list[int]:
    """Workers still running a moment after the trial ended."""
    time.sleep(0.3)
    return [w for w in workers if alive(w)]


# --------------------------------------------------------------------------- the workflow


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


def read_async(opener, paths: list[str], limit: int) -> list[bytes]:
    """Every path's bytes through a storage opener's asyncio reader (``limit`` in flight)."""

    async def gather():
        reader = opener.async_reader(limit)
        try:
            return await asyncio.gather(*(reader.read(p) for p in paths))
        finally:
            await reader.close()

    return asyncio.run(gather())


def install_plugin(root: Path, module: str, source: str, group: str, *entry_points: str) -> Path:
    """``module``.py holding ``source`` and a ``<module>-0.1.dist-info`` whose entry_points.txt
    lists ``entry_points`` under ``group``, in ``root``: what ``pip install`` of a plug-in
    writes (put ``root`` on sys.path to install it)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(source)
    info = root / f"{module}-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n" + "\n".join(entry_points) + "\n")
    return root


def plugin_env(plugin_dir: Path) -> dict:
    """The environment change that installs the plug-ins in ``plugin_dir`` (a module beside its
    dist-info, e.g. tests/support/plugin) in a child process: that folder first on PYTHONPATH."""
    path = os.pathsep.join([str(plugin_dir), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {"PYTHONPATH": path}


def smoke_config(override: dict | None = None) -> dict:
    """config.yaml with config/smoke.yaml and ``override`` merged key by key over it, as
    ``--configfile config/smoke.yaml override`` does (Snakemake's own update_config)."""
    import yaml
    from snakemake.utils import update_config

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    update_config(config, yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text()))
    update_config(config, override or {})
    return config


def check_like_the_workflow(config: dict) -> None:
    """What workflow/rules/common.smk does with a config before any job: normalize_datasets,
    check_schema, Snakemake's validate (filling in defaults), check_config."""
    from snakemake.utils import validate

    from imgread.plan.checks import check_config
    from imgread.plan.grid import normalize_datasets
    from imgread.plan.schema import check_schema, schema_file

    schema = ROOT / "config" / "schema.yaml"
    normalize_datasets(config)
    check_schema(config, schema)
    validate(config, schema_file(schema), set_default=True)
    check_config(config)
