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
   decoder, sequential and at 2 and 8 workers.

Sections 4, 5, 7, 8 and 9 are the phases' own (Phase.bench), numbered in registry order.

``--sections 6,7`` runs only some of them (the dataset is made whatever is chosen).

Every trial runs in a fresh process through the CLI, as the workflow runs them.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image

from imgread import cache
from imgread.dataset import INFO_NAME, GenerateParams, generate
from imgread.decoders import DECODERS, OUTPUTS, versions, warm_up
from imgread.manifest import read_manifest
from imgread.phases.registry import PHASES, load_object


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
        default="1,2,3,4,5,6,7,8,9",
        help="comma-separated sections to run (default all; 2 always makes the dataset)",
    )
    args = ap.parse_args(argv)
    sections = {int(x) for x in args.sections.split(",")}
    cores = os.cpu_count() or 1
    out = Path(args.out)
    print(f"# imgread bench on {cores} logical cores, Python {sys.version.split()[0]}")

    # 2 first: it makes the dataset the rest uses.
    t0 = time.perf_counter()
    manifest = generate(out, GenerateParams(count=args.count))
    gen_s = time.perf_counter() - t0
    info = json.loads((out / INFO_NAME).read_text())
    m = read_manifest(manifest)
    jobs = [(str(m.root / e.path), info["jpeg_quality"]) for e in m.entries]
    with ProcessPoolExecutor(cores) as pool:
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
    for number, section in _sections():
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
    own = [_decode_one, _residency, *phase_benches[:2], _decoders, *phase_benches[2:]]
    return list(zip((1, 3, 4, 5, 6, 7, *range(8, 8 + len(phase_benches))), own, strict=False))


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
    cache.warm(paths)
    before = cache.resident_fraction(paths)
    r = subprocess.run(
        [sys.executable, "-m", "imgread", "flush", *map(str, paths)],
        check=True,
        capture_output=True,
        text=True,
    )
    after = cache.resident_fraction(paths)
    print(f"\n## residency on {n300} images: before flush {before:.4f}, after {after:.4f}")
    print(f"imgread flush said: {r.stdout.strip()}")


def _decoders(m, manifest, args) -> None:
    data = (m.root / m.entries[0].path).read_bytes()
    print(f"\n## per-image decode time, one {len(data) / 1e6:.2f} MB image from bytes, 7 repeats")
    for output in OUTPUTS:
        for name, d in DECODERS.items():
            if name == "pillow-draft" and output == "full":
                continue  # it is pillow at full size
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


if __name__ == "__main__":
    raise SystemExit(main())
