"""``python -m imgread.phases.dataloader.overhead_bench``: what a DataLoader worker process costs
per image, and whether the best ``num_workers`` reaches ``GOAL`` x cores x the in-process rate.

The work is the DataLoader phase's own (imgread.phases.dataloader.phase: ``LoaderRunner``, its
``ManifestDataset``, its warm-up and its timed epoch, which holds every batch as a trial does)
on an ImageNet-like set: JPEGs of 500 x 375, about 110 KB (generated at several seeds, sampled
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
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL = 0.9  # the best DataLoader over cores x the in-process (num_workers 0) rate
QUIET = 0.05  # an epoch counts where other processes took at most this share of the machine
MAX_ROUNDS = 3  # epochs per cell at most: MAX_ROUNDS x repeats, quiet or not
WIDTH, HEIGHT, TARGET_BYTES = 500, 375, 110_000  # ImageNet's typical validation JPEG
DATASETS = Path(tempfile.gettempdir()) / "imgread-overhead"  # one folder per image size
BEFORE, AFTER = "default/item/fresh", "tuned/batch/pooled"
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

PLAIN = "processes"  # the cells' key of the machine's own ceiling (no DataLoader)


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
    from imgread.instruments import noise, page_faults
    from imgread.phases.dataloader.phase import DataLoaderPhase
    from imgread.phases.registry import get_phase

    manifest = Path(spec["manifest"])
    m = read_manifest(manifest)
    n = min(spec["n"], len(m))
    entries = m.entries[:n]
    phase = get_phase(DataLoaderPhase.name)
    ref = Path(spec["tmp"]) / f"reference-{spec['decoder']}.csv"
    if not ref.is_file():
        write_reference(ref, m.root, entries, spec["decoder"], "crop224")
    for e in entries:  # a warm page cache
        (m.root / e.path).read_bytes()
    inputs = {"manifest": str(manifest), "reference": str(ref)}
    runners, jobs = {}, None
    try:
        for name in spec["settings"]:
            normalize, collate = name.split("/")
            params = phase.resolve(
                {
                    "decoder": spec["decoder"],
                    "batch_size": str(spec["batch_size"]),
                    "allocator": spec["allocator"],
                    "normalize": normalize,
                    "collate": collate,
                }
            )
            jobs = phase.jobs(m.root, entries, params)
            for w in spec["workers"]:
                runners[(name, w)] = (phase.start("torch", w, params, jobs, inputs), params)
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
                runner, params = runners[(name, w)]
                f0, cpu0 = page_faults.tree_faults(os.getpid()), noise.snapshot()
                t0 = time.perf_counter()
                results = runner.run(jobs)
                seconds = time.perf_counter() - t0
                f1, cpu1 = page_faults.tree_faults(os.getpid()), noise.snapshot()
                cpu = noise.interference(cpu0, cpu1, seconds, os.cpu_count() or 1)
                if params is not None and (name, w) not in checked:  # all checked
                    phase.verify(results, m.root, entries, params, inputs)
                    checked.add((name, w))
                del results
                out[f"{name}@{w}"].append(
                    {
                        "rate": n / seconds,
                        "round": round_,
                        "cpu_ms": cpu["own_cpu_seconds"] * 1e3 / n,
                        # the machine's CPU other processes (and the hypervisor) took
                        "other": cpu["interference_fraction"],
                        "faults": (f1 - f0) / n if f0 is not None and f1 is not None else None,
                        # pooled: batches collated into fresh memory (no buffer was free)
                        "pool_misses": getattr(runner, "pool_misses", 0),
                    }
                )
        return out
    finally:
        for runner, _ in runners.values():
            runner.close()


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


def _used(epochs, quiet):
    """The epochs a cell's figures come from: its quiet ones, where it has any."""
    calm = [e for e in epochs if e["other"] <= quiet]
    return calm or epochs


def _pairs(cells: dict, w: int, quiet: float) -> list[float]:
    """num_workers w's rate / num_workers 0's in the same round (seconds apart: a machine whose
    speed drifts changes both), one per round where both epochs were quiet (every round where
    none was)."""
    zero = {e["round"]: e for e in cells[0]}
    pairs = [(e, zero[e["round"]]) for e in cells[w] if e["round"] in zero]
    calm = [(a, b) for a, b in pairs if max(a["other"], b["other"]) <= quiet]
    return [a["rate"] / b["rate"] for a, b in calm or pairs]


def _paired(cells: dict, w: int, quiet: float) -> float:
    """The median over rounds of :func:`_pairs`."""
    return statistics.median(_pairs(cells, w, quiet))


def _median_ci(values: list[float], resamples: int = 2000) -> tuple[float, float]:
    """A 95 % confidence interval of the median (percentile bootstrap, seeded)."""
    import random

    if len(values) < 2:
        return math.nan, math.nan
    rng = random.Random(0)
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return meds[int(0.025 * resamples)], meds[int(0.975 * resamples) - 1]


def _med(epochs, key):
    values = [e[key] for e in epochs if e[key] is not None]
    return statistics.median(values) if values else float("nan")


def merged(runs: list[dict]) -> dict:
    """Several runs' epochs as one run's: each run's rounds numbered after the previous run's,
    so that epochs stay paired within their own round."""
    out: dict = {}
    offset = 0
    for run in runs:
        last = 0
        for decoder, settings in run.items():
            for setting, cells in settings.items():
                for w, epochs in cells.items():
                    into = (
                        out.setdefault(decoder, {}).setdefault(setting, {}).setdefault(int(w), [])
                    )
                    into += [dict(e, round=e["round"] + offset) for e in epochs]
                    last = max([last, *(e["round"] + 1 for e in epochs)])
        offset += last
    return out


def _straddles(ci) -> str:
    if ci[0] <= GOAL <= ci[1]:
        return f" (it holds {GOAL}: another run here can read either side of the goal)"
    return ""


def report(results: dict, args, cores: int) -> bool:
    """Print the figures; True where every decoder's ``after`` setting reaches the goal."""
    ws = args.workers
    print(
        f"# DataLoader per-image overhead: {args.n} JPEGs of {args.size[0]}x{args.size[1]} "
        f"(~{args.target_bytes // 1000} KB), batch {args.batch_size}, warm page cache, "
        f"{cores} cores; medians of {args.repeats} interleaved epochs per cell where other "
        f"processes took at most {args.quiet:.0%} of the machine "
        f"(up to {MAX_ROUNDS * args.repeats} tried)"
    )
    print(
        "images/s per num_workers; ratio = the best num_workers >= 1 / (cores x the same "
        "setting's num_workers 0), each num_workers' rate over num_workers 0's in the same round "
        f"(median over rounds), goal >= {GOAL}; ci = its 95 % interval (bootstrap over rounds); "
        "vs w0* = the best median rate over cores x the "
        "fastest median num_workers 0 of any setting; w1/w0 = one worker over in-process, "
        "paired likewise; cpu = ms of "
        "CPU per image, the process and its workers together; faults = minor page faults per "
        "image, the process tree; others = the most CPU other processes took (a share of "
        "the machine) of any cell's median epoch; epochs: the fewest epochs a cell's medians "
        "are of"
    )
    # decoder -> (ratio, best rate, (ci low, ci high)), after the fix
    after: dict[str, tuple[float, float, tuple[float, float]]] = {}
    cols = " ".join(f"{'w' + str(w):>5}" for w in ws)
    for decoder, settings in results.items():
        print(
            f"\n{decoder:<19} {'images/s':^{6 * len(ws)}} ratio ci        vs w0* w1/w0 | "
            f"{'cpu ms/image':^{6 * len(ws)}}| {'faults/image':^{6 * len(ws)}}| others epochs"
        )
        print(f"{'':<19} {cols}                             | {cols} | {cols} |")
        plain = {s: c for s, c in settings.items() if s.endswith("/" + PLAIN)}
        settings = {s: c for s, c in settings.items() if s not in plain}
        best_w0 = max(_med(_used(c[0], args.quiet), "rate") for c in settings.values())
        for setting, cells in settings.items():
            paired = {w: _paired(cells, w, args.quiet) for w in ws if w > 0}
            all_cells, cells = cells, {w: _used(cells[w], args.quiet) for w in ws}
            rate = {w: _med(cells[w], "rate") for w in ws}
            best = max(rate[w] for w in ws if w > 0)
            top = max(paired, key=paired.get)  # the best num_workers, paired
            ratio = paired[top] / cores
            ci = tuple(x / cores for x in _median_ci(_pairs(all_cells, top, args.quiet)))
            one = paired.get(1, float("nan"))  # one worker vs in-process
            others = max(_med(cells[w], "other") for w in ws)
            epochs = min(len(cells[w]) for w in ws)
            tag = {BEFORE: " before", AFTER: " after"}.get(setting, "")
            if setting.endswith("/pooled"):  # batches that found no free buffer: none expected
                misses = sum(e.get("pool_misses", 0) for w in ws for e in cells[w])
                tag += f" (pool misses {misses})"
            cpu = " ".join(f"{_med(cells[w], 'cpu_ms'):5.2f}" for w in ws)
            flt = " ".join(f"{_med(cells[w], 'faults'):5.0f}" for w in ws)
            print(
                f"{setting:<19} {' '.join(f'{rate[w]:5.0f}' for w in ws)}  "
                f"{ratio:4.2f} {ci[0]:4.2f}-{ci[1]:4.2f}  {best / (cores * best_w0):4.2f}  "
                f"{one:4.2f}  | {cpu} | {flt} | "
                f"{others:4.0%} {epochs:2d}{tag}"
            )
            if setting == AFTER:
                after[decoder] = (ratio, best, ci)
        for setting, cells in plain.items():
            alloc = setting.split("/")[0]
            epochs = _used(cells[cores], args.quiet)
            rate = _med(epochs, "rate")
            mine = [c[0] for s, c in settings.items() if s.split("/")[0] == alloc]
            w0 = settings.get(f"{alloc}/item/fresh", {}).get(0) or (mine[0] if mine else None)
            ratio = _paired({0: w0, 1: cells[cores]}, 1, args.quiet) / cores if w0 else math.nan
            print(
                f"{alloc + ' no loader':<19} {cores} processes, the same work, nothing handed "
                f"back: {rate:5.0f} images/s, {ratio:4.2f} x (cores x the {alloc} w0): the "
                f"machine's own ceiling; cpu {_med(epochs, 'cpu_ms'):5.2f} ms/image, "
                f"others {_med(epochs, 'other'):4.0%}"
            )
    return after


def main(argv: list[str] | None = None) -> int:
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
        Path(args.json).write_text(json.dumps(results, indent=1))
    after = report(results, args, cores)
    if after:
        # The goal is the best DataLoader's; each decoder's is the stricter reading.
        top = max(after, key=lambda d: after[d][1])
        ratio, rate, ci = after[top]
        print(
            f"\ngoal, the best DataLoader (after: {AFTER}): {top} at {rate:.0f} images/s, "
            f"{ratio:.3f} x cores x its in-process rate: {'met' if ratio >= GOAL else 'NOT met'}"
        )
        print(f"  its 95 % interval: {ci[0]:.2f}-{ci[1]:.2f}{_straddles(ci)}")
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
