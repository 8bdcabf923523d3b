"""A phase defined outside the package, found through the ``imgread.phases`` entry point:
``stat`` every image (its size) one after another or from a thread pool. The test of the
phase contract (tests/workflow/test_plugin_phase_workflow.py) runs it through the real
workflow."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt

from imgread.phases.base import Param, Phase, Variant, Verified, expect_paths
from imgread.trial.pools import Pooled, Sequential, thread_pool

HERE = Path(__file__).resolve().parent


def stat_size(job) -> int:
    """The image's size in bytes, asked of the file system ``repeat`` times is not needed:
    one ``os.stat`` per image is the work."""
    return os.stat(job.path).st_size


class ToyPhase(Phase):
    name = "toy"
    description = "stat every image (a phase from outside the package)"
    cache_state = "warm"
    params = (Param("flavour", "plain", ("plain", "salted"), "a key that changes nothing"),)
    variants = {
        "sequential": Variant(
            "sequential", False, lambda w, p, jobs: Sequential(stat_size), "one after another"
        ),
        "threads": Variant(
            "threads", True, lambda w, p, jobs: Pooled(thread_pool(w), stat_size, w), "a pool"
        ),
    }
    figures = {"toy_rate": "toyphase:toy_rate"}
    captions_dir = str(HERE / "captions")
    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            name: {
                "type": "object",
                "additionalProperties": False,
                "required": ["workers"],
                "properties": {
                    "workers": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                    "sizes": {"type": "array", "items": {"type": "integer", "minimum": 1}},
                    "repetitions": {"type": "integer", "minimum": 1},
                    "flavour": {"type": "array", "items": {"enum": ["plain", "salted"]}},
                },
            }
            for name in ("sequential", "threads")
        },
    }

    def verify(self, results, root, entries, params, inputs):
        expected = expect_paths(self.name, results, root, entries)
        for path, size in results.items():
            if size != expected[path].bytes:
                raise AssertionError(f"{path}: stat gave {size}, manifest {expected[path].bytes}")
        return Verified(len(results), sum(results.values()), 0)


def toy_rate(trials, summary, speed, published, settings, phase, **_):
    """Images per second of every toy cell, by workers."""
    rows = summary[summary["phase"] == phase.name]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for (variant, flavour), g in rows.groupby(["variant", "flavour"]):
        ax.plot(g["workers"], g["median_images_per_s"], marker="o", label=f"{variant} {flavour}")
    ax.set(xlabel="workers", ylabel="images/s (median)", title="toy: stat every image")
    ax.legend()
    return fig
