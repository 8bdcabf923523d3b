"""``make bench``: the package's own performance figures, printed (not asserted).

1. decode time of one default 4 MB image (warm, median of repeats);
2. generating N default images vs the time Pillow needs merely to encode them;
3. residency before and after ``imgread flush`` on 300 images;
4. cold-load MB/s of sequential, asyncio and threads(8) on 300 images;
5. decode speedup of processes and threads at 2 workers on 100 images;
6. per-image time of every decoder at full size and at the 224 crop (warm, from bytes);
7. 2-worker speedup of every delivery (discard, pixels through threads, a pickling process
   pool and shared memory) for pillow and simplejpeg, full and 224, on 40 images;
8. Pillow to full size with the pixels delivered, 24 images of 2016 x 1512: processes-shm,
   processes and threads at 2 workers against sequential (the one-copy shared-memory path);
9. page faults per image and decode time with the default and the tuned allocator, per
   decoder, sequential and at 2 and 8 workers;
10. turbojpeg against libjpeg-turbo's own benchmark: ``tjbench`` (libjpeg-turbo-progs) and the
   ``turbojpeg`` decoder on one 12 MP JPEG at full size, one core, the same flags (RGB out,
   accurate IDCT, fancy upsampling), alternated; both rates in megapixels/s and their ratio;
11. what a DataLoader worker costs per image (imgread.phases.dataloader.overhead_bench,
docs/dataloader.md): the
   phase's LoaderRunner at num_workers 0, 1, 2, 4 per decoder, before and after its fix, and
   the best DataLoader over cores x the in-process rate (goal: at least 0.9), on its own
   ImageNet-like set.

Sections 4, 5, 7, 8, 9 and 11 are the phases' own (Phase.bench), numbered in registry order;
10 is the package's.

``--sections 6,7`` runs only some of them (the dataset is made whatever is chosen, except for
``--sections 10`` alone, which makes its one image in a temporary folder).

Every trial runs in a fresh process through the CLI, as the workflow runs them.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from imgread.dataset import INFO_NAME, GenerateParams, generate
from imgread.dataset.manifest import read_manifest
from imgread.decoders import DECODERS, OUTPUTS, TJ_FLAGS, can_decode, format_of, versions, warm_up
from imgread.instruments import page_cache
from imgread.phases.registry import PHASES, load_object
from imgread.util import end_on_sigterm


def _encode_only(args) -> float:
    """Decode a generated file (untimed), then time only Pillow's JPEG encode of it."""
    path, quality = args
    with Image.open(path) as img:
        rgb = img.convert("RGB")
    t0 = time.perf_counter()
    rgb.save(io.BytesIO(), "JPEG", quality=quality)
    return time.perf_counter() - t0


def _trial(
    manifest: Path, variant: str, n: int, workers: int, rep: int, *, phase: str, **params: str
) -> dict:
    """One trial through the CLI in a fresh process, as the workflow runs them; its record."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
        out = Path(tmp.name)
    try:
        cmd = [
            sys.executable,
            "-m",
            "imgread",
            "trial",
            "--manifest",
            str(manifest),
            "--phase",
            phase,
            "--variant",
            variant,
            "--n",
            str(n),
            "--workers",
            str(workers),
            "--repetition",
            str(rep),
            "--out",
            str(out),
        ]
        for key, value in params.items():
            cmd += [f"--{key}", value]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(
        prog="python -m imgread.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--out", default="results/bench/dataset", help="dataset folder (replaced)")
    ap.add_argument("--count", type=int, default=900, help="images to generate (default 900)")
    ap.add_argument("--repeats", type=int, default=3, help="trials per measurement (default 3)")
    ap.add_argument(
        "--sections",
        default="all",
        help="comma-separated sections to run (default all; 2 always makes the dataset)",
    )
    args = ap.parse_args(argv)
    numbered = _sections()
    if args.sections == "all":
        sections = {2} | {number for number, _ in numbered}
    else:
        sections = {int(x) for x in args.sections.split(",")}
    cores = os.cpu_count() or 1
    out = Path(args.out)
    print(f"# imgread bench on {cores} logical cores, Python {sys.version.split()[0]}")
    if sections <= {_number(_turbojpeg_vs_tjbench)}:  # needs one image, not the dataset
        _turbojpeg_vs_tjbench(None, None, args)
        return 0

    # 2 first: it makes the dataset the rest uses.
    t0 = time.perf_counter()
    manifest = generate(out, GenerateParams(count=args.count))
    gen_s = time.perf_counter() - t0
    info = json.loads((out / INFO_NAME).read_text())
    m = read_manifest(manifest)
    jobs = [(str(m.root / e.path), info["jpeg_quality"]) for e in m.entries]
    with ProcessPoolExecutor(cores, initializer=end_on_sigterm) as pool:
        encode_times = list(pool.map(_encode_only, jobs, chunksize=4))
    encode_s = sum(encode_times) / cores
    print(
        f"\n## generation of {args.count} default images ({info['width']}x{info['height']}, "
        f"quality {info['jpeg_quality']}, mean {info['mean_bytes'] / 1e6:.2f} MB, "
        f"range {info['min_bytes'] / 1e6:.2f}-{info['max_bytes'] / 1e6:.2f} MB)"
    )
    print(f"generate wall time          {gen_s:8.1f} s")
    print(
        f"plain encode time ({cores} cores) {encode_s:8.1f} s  "
        f"(sum of per-image encode times {sum(encode_times):.1f} s / {cores})"
    )
    print(f"ratio                       {gen_s / encode_s:8.2f} x  (target <= 1.5)")
    for number, section in numbered:
        if number in sections:
            section(m, manifest, args)
    return 0


def _sections():
    """(number, function) of every section: the package's own, and each phase's benches
    (Phase.bench, in registry order), numbered as the module docstring lists them."""
    phase_benches = [
        functools.partial(load_object(target), trial=functools.partial(_trial, phase=ph.name))
        for ph in PHASES.values()
        for target in ph.bench
    ]
    own = [
        _decode_one,
        _residency,
        *phase_benches[:2],
        _decoders,
        *phase_benches[2:5],
        _turbojpeg_vs_tjbench,
        *phase_benches[5:],  # the DataLoader's, and any a later phase adds
    ]
    return list(zip((1, *range(3, 2 + len(own))), own, strict=True))


def _number(section) -> int:
    """The number of one of the package's own sections."""
    return next(number for number, f in _sections() if f is section)


def _decode_one(m, manifest, args) -> None:
    path = m.root / m.entries[0].path
    path.read_bytes()
    times = []
    for _ in range(10):
        t = time.perf_counter()
        with Image.open(path) as img:
            img.convert("RGB")
        times.append(time.perf_counter() - t)
    print(f"\n## decode one default image ({m.entries[0].bytes / 1e6:.2f} MB), warm, 10 repeats")
    print(f"median {statistics.median(times):.4f} s, min {min(times):.4f} s")


def _residency(m, manifest, args) -> None:
    n300 = min(300, len(m))
    paths = m.paths(n300)
    page_cache.warm(paths)
    before = page_cache.resident_fraction(paths)
    r = subprocess.run(
        [sys.executable, "-m", "imgread", "flush", *map(str, paths)],
        check=True,
        capture_output=True,
        text=True,
    )
    after = page_cache.resident_fraction(paths)
    print(f"\n## residency on {n300} images: before flush {before:.4f}, after {after:.4f}")
    print(f"imgread flush said: {r.stdout.strip()}")


def _decoders(m, manifest, args) -> None:
    data = (m.root / m.entries[0].path).read_bytes()
    print(f"\n## per-image decode time, one {len(data) / 1e6:.2f} MB image from bytes, 7 repeats")
    fmt = format_of(data)
    for name, d in DECODERS.items():
        if not d.available:
            print(f"{'':>8} {name:<13} skipped: {d.missing()}")
    for output in OUTPUTS:
        for name, d in DECODERS.items():
            if name == "pillow-draft" and output == "full":
                continue  # it is pillow at full size
            if not d.available or not can_decode(name, fmt):
                continue
            warm_up(name, output)
            times = []
            for _ in range(7):
                t = time.perf_counter()
                d.decode(data, output)
                times.append(time.perf_counter() - t)
            print(
                f"{output:>8} {name:<13} median {statistics.median(times) * 1e3:6.1f} ms, "
                f"min {min(times) * 1e3:6.1f} ms  ({versions()[name]})"
            )


TJBENCH_ROUNDS = 3  # tjbench and turbojpeg alternated, so that both see the same machine
TJBENCH_SECONDS = 1.0  # tjbench -benchtime per round (after -warmup 0.5)
TJBENCH_DECODES = 7  # turbojpeg decodes per round and way (decode, decode_into)


def _tjbench_rate(path: Path, tjbench: str) -> float:
    """tjbench's decompression rate (Mpixels/s) of the JPEG: RGB out, top-down, no output
    file, accurate IDCT and fancy upsampling (its defaults, as the turbojpeg decoder's)."""
    cmd = [tjbench, str(path), "-rgb", "-nowrite", "-quiet"]
    cmd += ["-benchtime", str(TJBENCH_SECONDS), "-warmup", "0.5"]
    r = subprocess.run(cmd, check=True, capture_output=True, text=True)
    # -quiet: one row per test, "RGB (TD) YCbCr 4:2:0 W H N/A N/A <Decomp Perf>"
    rows = re.findall(r"^RGB\s.*?([0-9.]+)\s*$", r.stdout, re.M)
    if not rows:
        raise RuntimeError(f"cannot read tjbench's rate from: {r.stdout.strip()!r}")
    return float(rows[-1])


def _tjbench_image(m) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    """A study-size JPEG: the dataset's first where it is one of >= 12 MP, else one made with
    the project's generator (its defaults: 4032 x 3024, about 4 MB) in a temporary folder."""
    if m is not None and len(m):
        e = m.entries[0]
        path = m.root / e.path
        if e.width * e.height >= 12_000_000 and format_of(path) == "jpeg":
            return path, None
    tmp = tempfile.TemporaryDirectory(prefix="imgread-tjbench-")
    one = read_manifest(generate(Path(tmp.name) / "ds", GenerateParams(count=1), progress=False))
    return one.root / one.entries[0].path, tmp


def _turbojpeg_vs_tjbench(m, manifest, args) -> None:
    d = DECODERS["turbojpeg"]
    path, tmp = _tjbench_image(m)
    try:
        data = path.read_bytes()
        size = f"{len(data) / 1e6:.2f} MB"
        print(f"\n## turbojpeg vs tjbench, full size, one core: {path.name} ({size})")
        why = d.missing()
        if why is not None:
            print(f"skipped: {why}")
            return
        tjbench = shutil.which("tjbench")
        if tjbench is None:
            print(
                "tjbench is not installed: apt install libjpeg-turbo-progs (make system-deps "
                "does it as root); the turbojpeg rate alone follows"
            )
        _compare_with_tjbench(d, data, path, tjbench)
    finally:
        if tmp is not None:
            tmp.cleanup()


def _compare_with_tjbench(d, data: bytes, path: Path, tjbench: str | None) -> None:
    import numpy as np
    from turbojpeg import TJCS_YCbCr, TurboJPEG

    width, height, subsamp, colorspace = TurboJPEG().decode_header(data)
    sub = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0", 3: "gray", 4: "4:4:0", 5: "4:1:1"}.get(subsamp)
    mp = width * height / 1e6
    # One core: this process and tjbench (its child inherits the mask) on the same CPU.
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if cpus:
        os.sched_setaffinity(0, {max(cpus)})
    try:
        warm_up("turbojpeg", "full")
        out = np.empty((height, width, 3), np.uint8)
        out.fill(0)  # fault it in: a reused destination, as tjbench's
        tj_rates, new_s, into_s = [], [], []
        for _ in range(TJBENCH_ROUNDS):
            if tjbench is not None:
                tj_rates.append(_tjbench_rate(path, tjbench))
            for times, call in (
                (new_s, lambda: d.decode(data, "full")),
                (into_s, lambda: d.decode_into(data, "full", out)),
            ):
                call()
                for _ in range(TJBENCH_DECODES):
                    t = time.perf_counter()
                    call()
                    times.append(time.perf_counter() - t)
    finally:
        if cpus:
            os.sched_setaffinity(0, cpus)
    cs = "YCbCr" if colorspace == TJCS_YCbCr else f"colorspace {colorspace}"
    print(
        f"{width}x{height} ({mp:.1f} MP), {cs} {sub}; cpu {max(cpus) if cpus else '?'} only; "
        f"{TJBENCH_ROUNDS} rounds alternated"
    )
    print(
        f"flags: both RGB out (TJPF_RGB; tjbench -rgb), top-down, accurate IDCT and fancy "
        f"upsampling (TJ_FLAGS={TJ_FLAGS}: neither TJFLAG_FASTDCT nor TJFLAG_FASTUPSAMPLE; "
        f"tjbench without -fastdct/-fastupsample), tjbench -nowrite"
    )
    tj_rate = statistics.median(tj_rates) if tj_rates else None
    if tj_rate is not None:
        print(
            f"tjbench                       {tj_rate:7.1f} MP/s  (median of {len(tj_rates)} "
            f"runs of >= {TJBENCH_SECONDS:g} s; runs {', '.join(f'{r:.1f}' for r in tj_rates)})"
        )
    for label, times in (
        ("turbojpeg decode (new array)", new_s),
        ("turbojpeg decode_into (reused)", into_s),
    ):
        rate = mp / statistics.median(times)
        ratio = f"  ratio {rate / tj_rate:.3f}" if tj_rate else ""
        print(f"{label:<30}{rate:7.1f} MP/s{ratio}  (median of {len(times)} decodes)")
    print(
        "decode returns a new array: at this size glibc maps fresh memory for each and the "
        "pages fault in while it is written; decode_into reuses one, as tjbench does"
    )
    if tj_rate is not None:
        rate = mp / statistics.median(new_s)
        verdict = "met" if rate >= 0.9 * tj_rate else "NOT met"
        print(f"target: decode within 10 % of tjbench: {verdict} ({versions()['turbojpeg']})")


if __name__ == "__main__":
    raise SystemExit(main())
