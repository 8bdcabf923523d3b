"""The contract of a DataLoader pipeline: what a library must declare to be measured as a
variant of the DataLoader phase, and what its runner must hand back after the clock.

A pipeline's runner (an :class:`imgread.trial.pools.Runner`) is built by ``start(ctx)`` from
the trial's context before the clock (its workers started, one short warm-up epoch run), and
its ``run`` returns the timed epoch's batches. The project's own ``torch`` pipeline returns
``(images, labels)`` batches in the images' order, checked bit for bit against the decoder's
sequential decode. Every other pipeline (``exact = False``: code the project did not write)
returns ``(images, labels, keys)`` batches: ``images`` float32 ``batch x 3 x 224 x 224``
(``layout`` NCHW) or ``batch x 224 x 224 x 3`` (NHWC), normalised with the seed's
``(x / 255 - 0.5) / 0.5``; ``keys`` the manifest position of each sample, carried through the
library beside it. They are checked after the clock by
:func:`imgread.phases.dataloader.pipelines.check.verify_peer`: every one of the n entries
exactly once, its label, and its pixels within a stated tolerance of the project's reference
of the same transform.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from importlib import metadata

LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True)
class Pipeline:
    """One library's way of loading the DataLoader phase's samples.

    ``start``: "module:callable", the callable taking the trial's context and returning a
    started Runner (imported only when a trial starts, so that a library missing here costs
    nothing until then). ``imports``: the modules it needs (their absence, found without
    importing them, leaves its cells out with one line). ``distributions``: the packages
    whose versions its records carry. ``allowed``: the values of the phase's grid keys it
    takes (others are not its work: left out of the grid). ``knobs``: its own grid keys, as
    imgread.phases.base.Param, recorded with every trial."""

    name: str
    description: str
    start: str
    imports: tuple[str, ...] = ()
    distributions: tuple[str, ...] = ()
    allowed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    min_workers: int = 0
    exact: bool = False
    layout: str = "NCHW"
    reads: str = "the trial's files through the project's opener"
    # "module:callable" taking the trial's context and returning the files its epoch reads (a
    # cold trial evicts and proves them cold); None: the phase's own (the images, or shards)
    cache_files: str | None = None

    def missing(self) -> str | None:
        """Why this pipeline cannot run here (a module it needs is not installed), or None.
        Found without importing anything (a dry run and the Snakefile's parse stay cheap)."""
        absent = [m for m in self.imports if importlib.util.find_spec(m) is None]
        if absent:
            return f"{', '.join(absent)} not installed (pip install {' '.join(self.packages())})"
        return None

    def packages(self) -> tuple[str, ...]:
        """What to install for it: its distributions, or its modules where none is named."""
        return self.distributions or self.imports

    def versions(self) -> str:
        """Each distribution it records as dist==version ("dist absent" where not installed)."""
        out = []
        for dist in self.distributions:
            try:
                out.append(f"{dist}=={metadata.version(dist)}")
            except metadata.PackageNotFoundError:
                out.append(f"{dist} absent")
        return " ".join(out)

    def runner(self, ctx):
        """The started runner of this pipeline for the trial ``ctx``."""
        return _load(self.start)(ctx)

    def files(self, ctx) -> list[str] | None:
        """The files the trial's epoch reads, where the pipeline says (``cache_files``)."""
        return None if self.cache_files is None else list(_load(self.cache_files)(ctx))


def _load(dotted: str):
    module, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(module), attr)
