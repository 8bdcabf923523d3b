"""Gunther's Universal Scalability Law fitted to every speedup-vs-workers curve.

C(N) = N / (1 + a (N - 1) + b N (N - 1)): ``a`` is contention (the serialised share, as in
Amdahl's law), ``b`` coherency (the cost of keeping workers in step, which makes C fall past
its peak N* = sqrt((1 - a) / b)). With b = 0 it is Amdahl's law and ``a`` the serial fraction.
Fitted by non-linear least squares on the per-repetition speedups, not on cell means, so a
noisy cell weighs by its spread.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.optimize import curve_fit

from imgread.answer.keys import BASELINE_KEYS

MIN_WORKER_COUNTS = 3  # two parameters need at least three distinct N to leave a residual


def usl(n, a, b):
    """Speedup the USL predicts at ``n`` workers."""
    n = np.asarray(n, dtype=float)
    return n / (1 + a * (n - 1) + b * n * (n - 1))


def amdahl(n, s):
    """Amdahl's law: speedup at ``n`` workers with serial fraction ``s``."""
    n = np.asarray(n, dtype=float)
    return n / (1 + s * (n - 1))


def fit_usl(workers, speedups) -> dict:
    """Fit the USL (and Amdahl's law) to (workers, speedup) points.

    Returns a, b, peak_workers (inf when b is 0), amdahl_serial_fraction, rmse (of the USL fit,
    in speedup units), points, worker_counts and status: "ok", or why nothing was fitted.
    """
    n = np.asarray(workers, dtype=float)
    c = np.asarray(speedups, dtype=float)
    keep = np.isfinite(n) & np.isfinite(c) & (n >= 1) & (c > 0)
    n, c = n[keep], c[keep]
    counts = len(np.unique(n))
    out = dict(
        points=int(len(n)),
        worker_counts=int(counts),
        a=math.nan,
        b=math.nan,
        peak_workers=math.nan,
        amdahl_serial_fraction=math.nan,
        rmse=math.nan,
        status="ok",
    )
    if counts < MIN_WORKER_COUNTS:
        out["status"] = (
            f"not fitted: {counts} worker count(s) measured, the fit needs {MIN_WORKER_COUNTS}"
        )
        return out
    try:
        (a, b), _ = curve_fit(
            usl, n, c, p0=(0.05, 0.001), bounds=([0.0, 0.0], [1.0, np.inf]), maxfev=20000
        )
        (s,), _ = curve_fit(amdahl, n, c, p0=(0.05,), bounds=([0.0], [1.0]), maxfev=20000)
    except (RuntimeError, ValueError) as exc:
        out["status"] = f"not fitted: {exc}"
        return out
    out.update(
        a=float(a),
        b=float(b),
        peak_workers=_peak(a, b),
        amdahl_serial_fraction=float(s),
        rmse=float(np.sqrt(np.mean((usl(n, a, b) - c) ** 2))),
    )
    return out


def _peak(a: float, b: float) -> float:
    """N* = sqrt((1 - a) / b); inf where nothing makes more workers slower (b = 0); 1 where
    the fitted curve never gains 5 % over one worker (a near 1: nothing runs in parallel,
    and N* is then a ratio of two numbers near 0, not a peak)."""
    peak = math.inf if b <= 0 else max(math.sqrt(max(1 - a, 0.0) / b), 1.0)
    best = float(usl(min(peak, 1e6), a, b))
    return 1.0 if best < 1.05 * float(usl(1, a, b)) else peak


SCALING_COLUMNS = [
    "points",
    "worker_counts",
    "a",
    "b",
    "peak_workers",
    "amdahl_serial_fraction",
    "rmse",
    "status",
]


def scaling_table(trials: pd.DataFrame, curve_keys: list[str], baselines: dict) -> pd.DataFrame:
    """One USL fit per curve (``curve_keys``: phase, variant, the phase's keys, n).

    ``baselines`` maps a cell's baseline key (BASELINE_KEYS; see imgread.answer.stats.baselines) to
    the mean time of its baseline; each trial's speedup is that mean over the trial's own time.
    """

    rows = []
    for key, g in trials.groupby(curve_keys, sort=True):
        cell = dict(zip(curve_keys, key, strict=True))
        base = baselines.get(tuple(cell[k] for k in BASELINE_KEYS))
        if base is None or g["workers"].nunique() < 2:
            continue  # not a curve: a single worker count, or nothing to compare against
        fit = fit_usl(g["workers"], base / g["seconds"].to_numpy(dtype=float))
        rows.append(dict(cell, **fit))
    return pd.DataFrame(rows, columns=[*curve_keys, *SCALING_COLUMNS])
