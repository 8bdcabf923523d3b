"""The figures of ``python -m imgread.phases.dataloader.overhead_bench``: each cell's medians
over its quiet epochs, num_workers' rates paired with num_workers 0's in the same round, a
bootstrap interval of the ratio, and whether the goal (``GOAL`` x cores x the in-process rate)
is met; several runs' epochs merged into one."""

from __future__ import annotations

import math
import statistics

GOAL = 0.9  # the best DataLoader over cores x the in-process (num_workers 0) rate
QUIET = 0.05  # an epoch counts where other processes took at most this share of the machine
MAX_ROUNDS = 3  # epochs per cell at most: MAX_ROUNDS x repeats, quiet or not
BEFORE, AFTER = "default/item/fresh", "tuned/batch/pooled"
PLAIN = "processes"  # the cells' key of the machine's own ceiling (no DataLoader)


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


def straddles(ci) -> str:
    """A note where the interval ``ci`` holds the goal (another run may read either side)."""
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
            line, ratio, best, ci = _setting_row(setting, cells, args, cores, best_w0)
            print(line)
            if setting == AFTER:
                after[decoder] = (ratio, best, ci)
        for setting, cells in plain.items():
            print(_plain_row(setting, cells, settings, args, cores))
    return after


def _setting_row(setting: str, cells: dict, args, cores: int, best_w0: float):
    """(the printed row, ratio, best rate, ratio's ci) of one setting's cells."""
    ws = args.workers
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
    line = (
        f"{setting:<19} {' '.join(f'{rate[w]:5.0f}' for w in ws)}  "
        f"{ratio:4.2f} {ci[0]:4.2f}-{ci[1]:4.2f}  {best / (cores * best_w0):4.2f}  "
        f"{one:4.2f}  | {cpu} | {flt} | "
        f"{others:4.0%} {epochs:2d}{tag}"
    )
    return line, ratio, best, ci


def _plain_row(setting: str, cells: dict, settings: dict, args, cores: int) -> str:
    """The printed row of one allocator's no-loader cell: the machine's own ceiling."""
    alloc = setting.split("/")[0]
    epochs = _used(cells[cores], args.quiet)
    rate = _med(epochs, "rate")
    mine = [c[0] for s, c in settings.items() if s.split("/")[0] == alloc]
    w0 = settings.get(f"{alloc}/item/fresh", {}).get(0) or (mine[0] if mine else None)
    ratio = _paired({0: w0, 1: cells[cores]}, 1, args.quiet) / cores if w0 else math.nan
    return (
        f"{alloc + ' no loader':<19} {cores} processes, the same work, nothing handed "
        f"back: {rate:5.0f} images/s, {ratio:4.2f} x (cores x the {alloc} w0): the "
        f"machine's own ceiling; cpu {_med(epochs, 'cpu_ms'):5.2f} ms/image, "
        f"others {_med(epochs, 'other'):4.0%}"
    )
