"""``python -m imgread.phases.dataloader.overhead_bench``: what a DataLoader worker process costs
per image, and whether the best ``num_workers`` reaches ``GOAL`` x cores x the in-process rate.

The work is the DataLoader phase's own ``torch`` pipeline
(imgread.phases.dataloader.pipelines.torch_loader: ``LoaderRunner``, its ``ManifestDataset``,
its warm-up and its timed epoch, which holds every batch as a trial does) on an ImageNet-like
set: JPEGs of 500 x 375, about 110 KB (generated at several seeds, sampled
into one folder under the temporary directory; made once, reused; ``--size`` and
``--target-bytes`` make others). Every cell (decoder x allocator x normalize x num_workers) is
a persistent DataLoader started before the clock; the cells of one decoder and one allocator
run in one fresh process (a tuned allocator cannot be undone in a process), their epochs
interleaved; each cell's first epoch is checked against the decoder's sequential checksums.
A cell's figures are medians of its ``--repeats`` epochs during which other processes took at
most ``--quiet`` of the machine (each cell gets up to ``MAX_ROUNDS`` x repeats tries; where
none was quiet, of all). Printed per cell: the rate (images/s), CPU per image of the process
and its workers together (ms: what the work costs whatever else the machine runs), minor page
faults per image (the process tree, imgread.instruments.page_faults); per setting, ``best / (cores
x w0)``: the
best DataLoader's rate over ``cores`` times the same setting's rate at num_workers 0, and over
the fastest in-process rate of any setting; and per allocator the machine's own ceiling: the
same work in ``cores`` plain processes, nothing handed back.

A setting is ``allocator/normalize/collate``. ``before`` is the phase as it was
(``default/item/fresh``); ``after`` its fix (``tuned/batch/pooled``: the allocator keeps freed
buffers, uint8 batches normalised by the training process, each worker's batches in shared
memory it reuses); ``tuned/batch/fresh`` between them shows what the pooled buffers add;
docs/dataloader.md says why.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imgread.phases.dataloader.overhead_report import (
    AFTER,
    BEFORE,
    GOAL,
    MAX_ROUNDS,
    PLAIN,
    QUIET,
    merged,
    report,
    straddles,
)
from imgread.util import write_json_atomic

WIDTH, HEIGHT, TARGET_BYTES = 500, 375, 110_000  # ImageNet's typical validation JPEG
DATASETS = Path(tempfile.gettempdir()) / "imgread-overhead"  # one folder per image size
# --settings all: each cause alone
SETTINGS = (BEFORE, "tuned/item/fresh", "default/batch/fresh", "tuned/batch/fresh", AFTER)


def usable_cores() -> int:
    """Physical cores this process may run on."""
    from imgread.trial.record import physical_cores

    try:
        allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        allowed = os.cpu_count() or 1
    return max(1, min(physical_cores(), allowed))


def ensure_dataset(
    folder: Path, count: int, width=WIDTH, height=HEIGHT, target_bytes=TARGET_BYTES
) -> Path:
    """A set of ``count`` generated JPEGs of ``width`` x ``height`` and about ``target_bytes``
    in ``folder`` (its manifest); made when missing or too small: generated at several seeds
    (one seed makes at most a few hundred distinct images of 500 x 375), then ``count`` of them
    sampled into ``folder/ds``."""
    from imgread.dataset import GenerateParams, generate, sample
    from imgread.dataset.manifest import read_manifest

    manifest = folder / "ds" / "manifest.csv"
    if manifest.is_file() and len(read_manifest(manifest)) >= count:
        return manifest
    per_seed, seed, made = 384, 0, 0
    while made < count:
        k = min(per_seed, count - made)
        params = GenerateParams(
            count=k, width=width, height=height, target_bytes=target_bytes, seed=seed
        )
        generate(folder / "src" / f"seed{seed}", params, progress=False)
        made += k
        seed += 1
    return sample(folder / "src", folder / "ds", count, progress=False)


# --------------------------------------------------------------------------- one process


def _decode_normalize(decoder: str, paths: list[str]) -> int:
    """A sample's work (the 224 crop, normalised as normalize item does), pixels discarded."""
    from imgread.decoders import DECODERS
    from imgread.phases.dataloader import decoded_cache

    d = DECODERS[decoder]
    for path in paths:
        decoded_cache.normalize(d.decode(path, "crop224").transpose(2, 0, 1))
    return len(paths)


class _PlainProcesses:
    """The machine's own ceiling for the loader: ``cores`` started processes (fork, the
    allocator and decoder warmed up), each doing a 1/cores share of the images' work with
    nothing handed back. What any process-parallel loader could reach here."""

    def __init__(self, cores: int, decoder: str, allocator_name: str, paths: list[str]):
        import multiprocessing as mp

        from imgread.decoders import warm_up

        self.cores, self.decoder, self.paths = cores, decoder, paths
        ctx = mp.get_context("fork")
        self.pool = ctx.Pool(cores, warm_up, (decoder, "crop224", allocator_name))
        self.pool.starmap(_decode_normalize, [(decoder, paths[:8])] * cores)

    def run(self, jobs) -> None:
        shares = [(self.decoder, self.paths[k :: self.cores]) for k in range(self.cores)]
        self.pool.starmap(_decode_normalize, shares, chunksize=1)

    def close(self) -> None:
        self.pool.close()
        self.pool.join()


def run_cells(spec: dict) -> dict:
    """In this process: one allocator, one decoder, every (normalize/collate, num_workers)
    cell as a started LoaderRunner; ``repeats`` interleaved timed epochs of each. Returns, per
    cell (``normalize/collate@workers``), its rates, CPU ms and faults per image, one entry per
    epoch."""
    from imgread.dataset.manifest import read_manifest
    from imgread.decoders.reference import write_reference
    from imgread.phases.dataloader.phase import DataLoaderPhase
    from imgread.phases.registry import get_phase

    m = read_manifest(spec["manifest"])
    n = min(spec["n"], len(m))
    entries = m.entries[:n]
    phase = get_phase(DataLoaderPhase.name)
    ref = Path(spec["tmp"]) / f"reference-{spec['decoder']}.csv"
    if not ref.is_file():
        write_reference(ref, m.root, entries, spec["decoder"], "crop224")
    for e in entries:  # a warm page cache
        (m.root / e.path).read_bytes()
    runners = {}
    try:
        for name in spec["settings"]:
            normalize, collate = name.split("/")
            given = {
                "decoder": spec["decoder"],
                "batch_size": str(spec["batch_size"]),
                "allocator": spec["allocator"],
                "normalize": normalize,
                "collate": collate,
            }
            for w in spec["workers"]:
                ctx = phase.context(m, n, "torch", w, given, reference=str(ref))
                runners[(name, w)] = (phase.start(ctx), ctx)
        paths = [str(m.root / e.path) for e in entries]
        plain = _PlainProcesses(spec["cores"], spec["decoder"], spec["allocator"], paths)
        runners[(PLAIN, spec["cores"])] = (plain, None)
        out = {f"{nm}@{w}": [] for nm, w in runners}
        checked = set()

        def quiet(key):
            return sum(e["other"] <= spec["quiet"] for e in out[key])

        for round_ in range(spec["repeats"] * MAX_ROUNDS):
            if all(quiet(f"{nm}@{w}") >= spec["repeats"] for nm, w in runners):
                break
            for name, w in runners:  # a round: one epoch of every cell in turn
                runner, ctx = runners[(name, w)]
                verify = phase.verify if ctx is not None and (name, w) not in checked else None
                out[f"{name}@{w}"].append(_epoch(runner, ctx, n, round_, verify))
                checked.add((name, w))
        return out
    finally:
        for runner, _ in runners.values():
            runner.close()


def _epoch(runner, ctx, n: int, round_: int, verify=None) -> dict:
    """One timed epoch of a started cell: its rate, CPU ms and faults per image; the batches
    checked by ``verify(ctx, results)`` where given (each cell's first epoch)."""
    from imgread.instruments import noise, page_faults

    f0, cpu0 = page_faults.tree_faults(os.getpid()), noise.snapshot()
    t0 = time.perf_counter()
    results = runner.run(list(ctx.jobs) if ctx is not None else None)
    seconds = time.perf_counter() - t0
    f1, cpu1 = page_faults.tree_faults(os.getpid()), noise.snapshot()
    cpu = noise.interference(cpu0, cpu1, seconds, os.cpu_count() or 1)
    if verify is not None:
        verify(ctx, results)
    del results
    return {
        "rate": n / seconds,
        "round": round_,
        "cpu_ms": cpu["own_cpu_seconds"] * 1e3 / n,
        # the machine's CPU other processes (and the hypervisor) took
        "other": cpu["interference_fraction"],
        "faults": (f1 - f0) / n if f0 is not None and f1 is not None else None,
        # pooled: batches collated into fresh memory (no buffer was free)
        "pool_misses": getattr(runner, "pool_misses", 0),
    }


# --------------------------------------------------------------------------- the figures


def _child(spec: dict) -> dict:
    """run_cells in a fresh process (its allocator untouched by any earlier cell)."""
    cmd = [
        sys.executable,
        "-m",
        "imgread.phases.dataloader.overhead_bench",
        "--child",
        json.dumps(spec),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"overhead_bench child failed ({r.returncode}):\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure(args, cores: int) -> dict:
    """{decoder: {setting: {workers: [epoch dicts]}}} for every decoder and setting asked, and
    {decoder: {"<allocator>/processes": {cores: [...]}}}: the machine's own ceiling."""
    w, h = args.size
    folder = Path(args.dataset or DATASETS / f"{w}x{h}-{args.target_bytes}")
    manifest = ensure_dataset(folder, args.n, w, h, args.target_bytes)
    settings = args.settings.split(",")
    by_alloc: dict[str, list[str]] = {}
    for s in settings:
        alloc, rest = s.split("/", 1)
        by_alloc.setdefault(alloc, []).append(rest)
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="imgread-overhead-") as tmp:
        for decoder in args.decoders.split(","):
            out[decoder] = {}
            for alloc, names in by_alloc.items():
                spec = {
                    "manifest": str(manifest),
                    "n": args.n,
                    "decoder": decoder,
                    "allocator": alloc,
                    "settings": names,
                    "workers": args.workers,
                    "batch_size": args.batch_size,
                    "repeats": args.repeats,
                    "quiet": args.quiet,
                    "cores": cores,
                    "tmp": tmp,
                }
                cells = _child(spec)
                for key, epochs in cells.items():
                    name, w = key.rsplit("@", 1)
                    out[decoder].setdefault(f"{alloc}/{name}", {})[int(w)] = epochs
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m imgread.phases.dataloader.overhead_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument(
        "--dataset",
        default=None,
        help=f"folder of the image set, made there if missing (default {DATASETS}/WxH-BYTES)",
    )
    ap.add_argument(
        "--size",
        type=lambda s: tuple(int(x) for x in s.split("x")),
        default=(WIDTH, HEIGHT),
        help=f"image width x height (default {WIDTH}x{HEIGHT}, ImageNet-like)",
    )
    ap.add_argument(
        "--target-bytes",
        type=int,
        default=TARGET_BYTES,
        help="mean JPEG size (default %(default)s)",
    )
    ap.add_argument("--n", type=int, default=768, help="images per epoch (default %(default)s)")
    ap.add_argument("--decoders", default="pillow,opencv,simplejpeg")
    ap.add_argument(
        "--workers",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[0, 1, 2, 4],
        help="num_workers values; 0 is needed for the ratio (default 0,1,2,4)",
    )
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5, help="epochs per cell (default 5)")
    ap.add_argument(
        "--settings",
        default=f"{BEFORE},tuned/batch/fresh,{AFTER}",
        help="allocator/normalize[/collate] settings (collate fresh where not given), or all: "
        + ",".join(SETTINGS)
        + " (default %(default)s)",
    )
    ap.add_argument(
        "--quiet",
        type=float,
        default=QUIET,
        help="count only epochs where other processes took at most this share of the machine "
        "(default %(default)s); each cell gets up to 3 x repeats tries",
    )
    ap.add_argument("--json", default=None, help="also write the raw epochs here")
    ap.add_argument(
        "--report",
        default=None,
        metavar="FILE[,FILE...]",
        help="measure nothing: report the epochs of earlier runs' --json files, their rounds "
        "together (the same --workers, --settings and --decoders as they were run with)",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    """Measure (or, with --report, read) the cells' epochs and print the figures."""
    ap = _parser()
    args = ap.parse_args(argv)
    if args.settings == "all":
        args.settings = ",".join(SETTINGS)
    # allocator/normalize[/collate]: collate fresh where it is not given
    args.settings = ",".join(
        s if s.count("/") == 2 else f"{s}/fresh" for s in args.settings.split(",")
    )
    if args.child is not None:
        print(json.dumps(run_cells(json.loads(args.child))))
        return 0
    if 0 not in args.workers:
        ap.error("--workers must include 0 (the in-process rate the ratio is against)")
    cores = usable_cores()
    if args.report:
        results = merged([json.loads(Path(f).read_text()) for f in args.report.split(",")])
    else:
        results = measure(args, cores)
    if args.json:
        write_json_atomic(args.json, results, indent=1, newline=False)
    after = report(results, args, cores)
    if after:
        # The goal is the best DataLoader's; each decoder's is the stricter reading.
        top = max(after, key=lambda d: after[d][1])
        ratio, rate, ci = after[top]
        print(
            f"\ngoal, the best DataLoader (after: {AFTER}): {top} at {rate:.0f} images/s, "
            f"{ratio:.3f} x cores x its in-process rate: {'met' if ratio >= GOAL else 'NOT met'}"
        )
        print(f"  its 95 % interval: {ci[0]:.2f}-{ci[1]:.2f}{straddles(ci)}")
        each = ", ".join(
            f"{d} {r:.2f} ({lo:.2f}-{hi:.2f})" for d, (r, _, (lo, hi)) in after.items()
        )
        every = all(r >= GOAL for r, _, _ in after.values())
        print(f"goal, every decoder (after): {each}: {'met' if every else 'NOT met'}")
    return 0


def bench_section(m, manifest, args, trial=None) -> None:
    """A section for ``make bench`` (imgread.bench: ``section(m, manifest, args)``): this
    benchmark on its own ImageNet-like set with bench's ``--repeats``."""
    main(["--repeats", str(max(3, getattr(args, "repeats", 3)))])


if __name__ == "__main__":
    sys.exit(main())
