"""``make bench`` sections of the decode phase (imgread.bench numbers them; DecodePhase.bench
lists them): the study's speedup, every delivery's 2-worker speedup, the shared-memory delivery
on 1 MB photos, and what the allocator setting (imgread.decoders.allocator) does per decoder.

Every trial runs through ``trial(manifest, variant, n, workers, repetition, **params)``: a fresh
process, as the workflow runs them; its record comes back as a dict.
"""

from __future__ import annotations

import functools
import statistics
from pathlib import Path

from imgread.dataset import GenerateParams, generate

# Photos of 3 megapixels, 1 MB: where handing pixels back costs most against decoding them.
PHOTOS = GenerateParams(count=100, width=2016, height=1512, target_bytes=1_000_000)
SHM_GOAL = 1.6  # processes-shm at 2 workers over sequential, Pillow, full size, pixels


def bench_speedup(m, manifest, args, trial) -> None:
    """make bench: speedup of processes and threads at 2 workers on 100 images."""
    n100 = min(100, len(m))
    print(f"\n## decode of {n100} images, warm, {args.repeats} trials each")
    seq = statistics.mean(
        rec["seconds"]
        for rec in (trial(manifest, "sequential", n100, 1, i) for i in range(args.repeats))
    )
    print(f"sequential mean {seq:.3f} s")
    for variant in ("processes", "threads"):
        recs = [trial(manifest, variant, n100, 2, i) for i in range(args.repeats)]
        mean = statistics.mean(rec["seconds"] for rec in recs)
        total = statistics.mean(rec["total_seconds"] for rec in recs)
        print(
            f"{variant:>10}(2) mean {mean:.3f} s, speedup {seq / mean:.2f}x "
            f"(with start-up {total:.3f} s, {seq / total:.2f}x)"
        )


def bench_deliveries(m, manifest, args, trial) -> None:
    """make bench: 2-worker speedup of every delivery, pillow and simplejpeg, on 40 images."""
    n = min(40, len(m))
    cells = [
        ("sequential", 1, "discard"),
        ("sequential", 1, "pixels"),
        ("threads", 2, "discard"),
        ("threads", 2, "pixels"),
        ("processes", 2, "discard"),
        ("processes", 2, "pixels"),
        ("processes-shm", 2, "pixels"),
    ]
    print(f"\n## 2-worker speedup of each delivery, {n} images, {args.repeats} trials each")
    print("speedup = median sequential time (same decoder, output, delivery) / median time")
    for decoder in ("pillow", "simplejpeg"):
        for output in ("full", "crop224"):
            median = {}
            for variant, workers, delivery in cells:
                recs = [
                    trial(
                        manifest,
                        variant,
                        n,
                        workers,
                        i,
                        decoder=decoder,
                        output=output,
                        delivery=delivery,
                    )
                    for i in range(args.repeats)
                ]
                median[(variant, delivery)] = statistics.median(r["seconds"] for r in recs)
            line = ", ".join(
                f"{v}/{d} {median[('sequential', d)] / t:.2f}x"
                for (v, d), t in median.items()
                if v != "sequential"
            )
            seq = ", ".join(
                f"{d} {median[('sequential', d)] / n * 1e3:.0f} ms/image"
                for d in ("discard", "pixels")
            )
            print(f"{decoder:>10} {output:>7}: sequential {seq}; {line}")


def _photos(args) -> Path:
    """The 2016 x 1512 dataset of these sections, next to the bench's own dataset."""
    return _generated(str(Path(args.out).parent / "photos-2016x1512"))


@functools.cache  # made once a run, for both sections
def _generated(out: str) -> Path:
    return generate(out, PHOTOS, progress=False)


def _cells(trial, manifest, n, cells, repeats, **params) -> dict:
    """{(variant, workers, allocator): records}, the cells' repetitions interleaved (a busy
    machine then slows every cell alike instead of one)."""
    out: dict = {}
    for rep in range(repeats):
        for variant, workers, alloc in cells:
            rec = trial(manifest, variant, n, workers, rep, allocator=alloc, **params)
            out.setdefault((variant, workers, alloc), []).append(rec)
    return out


def _median(recs, key) -> float:
    return statistics.median(r[key] for r in recs)


def bench_shm_delivery(m, manifest, args, trial) -> None:
    """make bench: Pillow to full size with the pixels delivered, 24 photos of 2016 x 1512
    (1 MB): processes-shm against sequential, threads and the pickling pool at 2 workers."""
    photos, n = _photos(args), 24
    cells = [
        ("sequential", 1, "default"),
        ("processes-shm", 2, "default"),
        ("threads", 2, "default"),
        ("processes", 2, "default"),
        ("sequential", 1, "tuned"),
        ("processes-shm", 2, "tuned"),
    ]
    repeats = max(args.repeats, 5)
    recs = _cells(trial, photos, n, cells, repeats, decoder="pillow", delivery="pixels")
    print(
        f"\n## pixels handed back: pillow, full, {n} images of 2016x1512 (1 MB), {repeats} trials"
    )
    print("speedup = median sequential time (same allocator) / median time; goal for")
    print(f"processes-shm at 2 workers with the default allocator: >= {SHM_GOAL}x")
    for (variant, workers, alloc), rs in recs.items():
        seq = _median(recs[("sequential", 1, alloc)], "seconds")
        med = _median(rs, "seconds")
        print(
            f"{variant:>13}({workers}) {alloc:<7} median {med:.3f} s "
            f"[{min(r['seconds'] for r in rs):.3f}-{max(r['seconds'] for r in rs):.3f}], "
            f"speedup {seq / med:.2f}x, start-up {_median(rs, 'startup_seconds'):.2f} s, "
            f"{_median(rs, 'minor_faults_per_image'):.0f} page faults/image"
        )


def bench_allocators(m, manifest, args, trial) -> None:
    """make bench: page faults per image and decode time with the default and the tuned
    allocator, per decoder, sequential and at 2 and 8 workers (100 photos, full, discard)."""
    photos, n = _photos(args), PHOTOS.count
    cells = [
        (v, w, a)
        for v, w in (("sequential", 1), ("processes", 2), ("processes", 8))
        for a in ("default", "tuned")
    ]
    print(
        f"\n## allocator: default vs tuned, {n} images of 2016x1512, full, pixels discarded, "
        f"{args.repeats} trials each"
    )
    print("time: median s; cpu: the trial's CPU per image (process and workers); speedup over")
    print("the same decoder and allocator sequentially; tuned/default: time ratio")
    for decoder in ("pillow", "opencv", "simplejpeg"):
        recs = _cells(trial, photos, n, cells, args.repeats, decoder=decoder)
        for (variant, workers, alloc), rs in recs.items():
            med = _median(rs, "seconds")
            seq = _median(recs[("sequential", 1, alloc)], "seconds")
            ratio = med / _median(recs[(variant, workers, "default")], "seconds")
            cpu = statistics.median(r["own_cpu_seconds"] / r["images"] for r in rs)
            print(
                f"{decoder:>10} {variant:>10}({workers}) {alloc:<7} {med:6.3f} s, "
                f"cpu {cpu * 1e3:5.1f} ms/image, "
                f"{_median(rs, 'minor_faults_per_image'):6.0f} faults/image, "
                f"speedup {seq / med:4.2f}x, tuned/default {ratio:4.2f}"
            )
