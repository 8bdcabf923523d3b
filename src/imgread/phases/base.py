"""The contract of a phase: what a trial measures and everything the rest of the system asks
about it (grid keys, variants, cache state, inputs, rate, ceiling, jobs, tables, figures).

``imgread.trial.run`` runs any phase the same way; the workflow, the analysis, the figures and the
recommendation ask a phase (through :mod:`imgread.phases.registry`) instead of naming it.
"""

from __future__ import annotations

import inspect
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from imgread.dataset.manifest import ImageEntry, Manifest, read_manifest
from imgread.errors import UserError, VerificationError
from imgread.trial.context import TrialContext
from imgread.trial.pools import Runner
from imgread.trial.search import SearchKey


class Job(NamedTuple):
    """One image of a trial: its path, its index, and the array shape a decode must return."""

    path: str
    index: int
    shape: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class Param:
    """A grid key a phase adds to a trial (a column of trials.csv and a part of its path).
    ``choices`` None means any whole number >= ``minimum`` (kept as its decimal string)."""

    name: str
    default: str
    choices: tuple[str, ...] | None
    description: str
    minimum: int = 1
    # A key added after trials were recorded: at its default it is left out of a cell's
    # params, and so of its trial path (imgread.plan.grid), so the cells measured before
    # keep their paths (the trial fills the default back in: Phase.resolve).
    later: bool = False

    def check(self, value) -> str:
        """The value as a string; UserError naming the phase's key and what is allowed."""
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if self.choices is None:
            if not text.isdigit() or int(text) < self.minimum:
                raise UserError(
                    f"{self.name} must be a whole number >= {self.minimum}, got {value!r}"
                )
            return str(int(text))
        if text not in self.choices:
            raise UserError(
                f"unknown {self.name} {value!r}; choose one of {', '.join(self.choices)}"
            )
        return text


@dataclass(frozen=True)
class NameParam(Param):
    """A grid key whose values are names the config defines (storage profiles): any lower-case
    name here; imgread.plan.checks checks it against the config's list."""

    def check(self, value) -> str:
        text = str(value)
        if not _NAME.match(text):
            raise UserError(
                f"{self.name} must be a name of lower-case letters, digits, '.', '_' or '-', "
                f"got {value!r}"
            )
        return text


_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")

# The grid key of the phases that read the dataset: which storage profile the bytes come from
# (imgread.storage). Its default is the study's: the files where they are.
STORAGE = NameParam(
    "storage",
    "local",
    None,
    "the storage profile the images are read from (config storage:; local - the study's)",
)


# The grid key of the phases that read storage: the storage client a trial on an object-store
# profile (kind http) reads through (imgread.storage.clients; imgread - the project's own
# reader). The files where they are (local) are read by the project's readers only.
CLIENT = Param(
    "client",
    "imgread",
    ("imgread", "boto3", "obstore", "s3torchconnector"),
    "the storage client of an http profile: imgread (the project's reader), boto3, obstore, "
    "s3torchconnector",
)


# The grid key of the phases that can read a dataset packed into tar shards
# (imgread.dataset.shards): 0 - the loose files (the study's), N - the shards of N MB, which
# the dataset's shards_mb must list.
SHARD_MB = Param(
    "shard_mb",
    "0",
    None,
    "0 - loose files; N - the dataset's tar shards of N MB (its shards_mb lists N)",
    0,
)


class Start(Protocol):
    """A variant's start: from the trial's context (its params, workers, jobs, inputs and
    storage opener), the started Runner: pools created, every worker running, buffers
    allocated."""

    def __call__(self, ctx: TrialContext, /) -> Runner: ...


@dataclass(frozen=True)
class Variant:
    """One way of doing a phase's work. ``parallel`` variants take a worker count;
    ``allowed`` restricts the values of some params (other combinations measure nothing).
    ``start`` may be None where the phase's own ``start`` starts every variant."""

    name: str
    parallel: bool
    start: Start | None
    description: str
    allowed: dict[str, tuple[str, ...]] = field(default_factory=dict)
    min_workers: int = 1  # 0 where the work can run in the calling process (num_workers=0)


@dataclass(frozen=True)
class Verified:
    """What a run did, checked against the manifest (and extra columns for the record)."""

    images: int
    bytes: int
    pixels: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Table:
    """A table a phase adds to results/tables/: ``build`` ("module:function") is called with
    the phase's rows of (trials, summary, speedup), one machine at a time where the study ran
    on several (imgread.answer.analysis.phase_tables), and returns a DataFrame, written as CSV, or
    as Markdown under ``title`` and ``note`` where ``file`` ends in .md. ``caption``: the table
    is a report() output with workflow/report/<stem>.rst as its caption."""

    file: str
    build: str
    title: str = ""
    note: str = ""
    caption: bool = False
    every_storage: bool = False  # False: only the cells read from the local files (the study's)
    every_dataset: bool = False  # False: only the cells of the study's dataset (the first)

    @property
    def stem(self) -> str:
        return self.file.rsplit(".", 1)[0]


class Phase:
    """Base of every phase; subclasses set the class attributes and implement the methods.

    The registry (imgread.phases.registry) checks the contract when it loads a phase."""

    name: str = ""
    description: str = ""
    cache_state: str = "warm"  # "cold": evicted and proven cold; "warm": read and proven warm
    # The variant its users start from, where that is another's library (the answer gives the
    # speedup over its best cell: x_<name>); None: the baseline is that start
    starting_point: str | None = None
    baseline: tuple[str, int] = ("sequential", 1)  # (variant, workers) speedups are against
    params: tuple[Param, ...] = ()
    variants: dict[str, Variant] = {}
    # What the recommendation compares. job_keys: the params that say what the user needs done
    # (the rest, the variant and the workers are the strategy to choose); rate: the record
    # column (higher is better) and its unit; ceiling: "device" (read bandwidth) or "cpu"
    # (one core's rate x min(workers, cores)).
    job_keys: tuple[str, ...] = ()
    # (variant, workers) cells that do the work on one core; the fastest sets the CPU ceiling
    one_core: tuple[tuple[str, int], ...] = (("sequential", 1),)
    rate: tuple[str, str] = ("images_per_s", "images/s")
    ceiling: str = "cpu"
    # What the report shows of the phase: its own tables, and its figures, each drawn by a
    # function "module:function"(trials, summary, speed, published, settings, phase=self,
    # caches=, frames=, scaling=, device=) -> matplotlib Figure (imgread.answer.figures.draw).
    tables: tuple[Table, ...] = ()
    figures: dict[str, str] = {}
    # A phase from outside the package brings its config section's JSON schema (the built-in
    # phases' sections are in config/schema.yaml) and a folder of caption templates
    # (<figure or table>.rst; None: the workflow's workflow/report/).
    schema: dict | None = None
    captions_dir: str | None = None
    # Sections of `make bench` (imgread.bench): "module:function"(m, manifest, args, trial).
    bench: tuple[str, ...] = ()
    # The grid keys a config's `searches:` may search (imgread.trial.search): the highest
    # value whose measured trial meets the key's goal (docs/searches.md).
    search_keys: dict[str, SearchKey] = {}

    # -- grid keys
    @property
    def reads_storage(self) -> bool:
        """Whether the phase takes the grid key ``storage`` (imgread.storage)."""
        return any(p.name == STORAGE.name for p in self.params)

    def resolve(self, given: dict[str, str] | None) -> dict[str, str]:
        """Every param of this phase, defaults filled in; UserError for an unknown key/value."""
        given = dict(given or {})
        out = {}
        for p in self.params:
            try:
                out[p.name] = p.check(given.pop(p.name, p.default))
            except UserError as exc:
                raise UserError(f"{self.name}: {exc}") from None
        if given:
            raise UserError(
                f"{self.name}: unknown setting(s) {sorted(given)}; this phase takes "
                f"{[p.name for p in self.params] or 'none'}"
            )
        return out

    def unsupported(self, variant: str, params: dict[str, str]) -> str | None:
        """Why ``variant`` cannot run with ``params`` (None if it can)."""
        if params.get("client", CLIENT.default) != CLIENT.default and params["storage"] == "local":
            return (
                f"{self.name}: client {params['client']} reads an object store (an http "
                "profile); storage local reads the files where they are: use client imgread"
            )
        for key, allowed in self.variants[variant].allowed.items():
            if params[key] not in allowed:
                return (
                    f"{self.name}/{variant} takes {key} {' or '.join(allowed)}, not {params[key]!r}"
                )
        return None

    def missing(self, variant: str) -> str | None:
        """Why ``variant`` cannot run on this machine (a library not installed), or None: its
        cells stay planned, and each trial writes a skip record with this line instead of a
        measurement (found without importing the library)."""
        return None

    def redundant(self, variant: str, params: dict[str, str]) -> bool:
        """True for combinations that repeat another cell's work (left out of config grids)."""
        return self.unsupported(variant, params) is not None

    def variant(self, name: str) -> Variant:
        """The registered variant; UserError naming the allowed names otherwise."""
        try:
            return self.variants[name]
        except KeyError:
            raise UserError(
                f"unknown {self.name} variant {name!r}; choose one of {', '.join(self.variants)}"
            ) from None

    def context(
        self, manifest, n_images: int, variant: str, workers: int = 1, params=None, **files
    ) -> TrialContext:
        """A trial's context outside a trial (tests, make bench): the first ``n_images`` of
        ``manifest`` (a Manifest or its path), ``params`` resolved, the phase's jobs; ``files``
        the reference and cache_dir; no storage session (the files where they are)."""
        if not isinstance(manifest, Manifest):
            manifest = read_manifest(manifest)
        ctx = TrialContext(
            variant,
            int(workers),
            self.resolve(params),
            manifest,
            manifest.subset(n_images),
            reference=files.get("reference"),
            cache_dir=files.get("cache_dir"),
        )
        return ctx.with_jobs(call_hook(self, "jobs", ctx))

    def page_cache(self, params: dict[str, str]) -> str:
        """'cold' or 'warm': the page-cache state this cell's trials start from."""
        return self.cache_state

    # -- the inputs a trial of a cell needs besides the dataset (the workflow makes them first)
    def reference(self, params: dict[str, str]) -> tuple[str, str] | None:
        """(decoder, output) whose sequential checksums the cell's delivered pixels are
        checked against, or None where the cell hands no pixels back."""
        return None

    def decoded_cache(self, params: dict[str, str]) -> str | None:
        """The decoder whose decoded cache (imgread.phases.dataloader.decoded_cache) the cell
        reads, or None."""
        return None

    # -- the trial: each hook is handed the trial's context (imgread.trial.context), which
    # holds what the trial read once: the manifest's entries, the params, the jobs, the inputs
    # and, from start on, the storage's opener
    def cache_files(self, ctx: TrialContext) -> list[str]:
        """The files whose page-cache state is prepared and proven (the images by default)."""
        return [j.path for j in ctx.jobs]

    def jobs(self, ctx: TrialContext) -> list[Job]:
        """The jobs of a trial over ``ctx.entries`` (before the clock)."""
        return [Job(str(ctx.root / e.path), i) for i, e in enumerate(ctx.entries)]

    def check(self, ctx: TrialContext) -> None:
        """Refuse, before anything starts (no storage server, no namespace, no clock), a trial
        that cannot run here (UserError). Every refusal of a phase belongs here."""

    def start(self, ctx: TrialContext) -> Runner:
        """Start the variant ``ctx.variant`` with ``ctx.workers``: pools created, every worker
        running, buffers allocated."""
        return start_variant(self.variants[ctx.variant], ctx)

    def verify(self, ctx: TrialContext, results: dict) -> Verified:
        """Check the results after the clock stopped; VerificationError if they are wrong."""
        raise NotImplementedError

    def objective(self, job: dict[str, str]) -> tuple[str, bool, str]:
        """(record column, higher is better, unit) the recommendation ranks a job's cells by."""
        return self.rate[0], True, self.rate[1]

    def ceiling_kind(self, params: dict[str, str]) -> str:
        """'device', 'cpu', or 'none' where no ceiling bounds the rate of this cell."""
        return self.ceiling

    def ceiling_params(self, params: dict[str, str]) -> dict[str, str]:
        """The keys of the sequential cell whose rate x min(workers, cores) is a cell's CPU
        ceiling (by default the cell's own keys)."""
        return dict(params)

    def record_fields(self, params: dict) -> dict[str, Any]:
        """Columns this phase adds to every record (params and versions)."""
        return dict(params)

    def search_scale(self, key: str, value: float | None, config: dict) -> dict[str, Any]:
        """What a search's answer ``value`` of ``key`` means at full scale (its summary's
        ``scale``; {} where the value needs no scale): the config is the study's."""
        return {}


def expect_paths(phase: str, results: dict, root: Path, entries) -> dict[str, ImageEntry]:
    """{path: entry} of the trial's images; VerificationError unless results cover exactly them."""
    expected = {str(root / e.path): e for e in entries}
    if set(results) != set(expected):
        missing = sorted(set(expected) - set(results))[:3]
        raise VerificationError(
            f"{phase}: results cover {len(results)} files, expected {len(expected)} "
            f"(missing e.g. {missing})"
        )
    return expected


# --------------------------------------------------------------------------- the former contract
# Before the trial's context, the hooks took what they used one by one. A phase or variant
# still written so runs on: the trial calls every hook through call_hook (and a variant's
# start through start_variant), which hands a hook in its former form (told apart by how
# many arguments it requires) the arguments it took then, with a DeprecationWarning once per
# phase and hook. The DataLoader is the built-in phase still in it; drop this once none is.

_FORMER = {
    # hook: (its former arguments, them from the context and the new form's arguments)
    "jobs": ("(root, entries, params)", lambda c: (c.root, c.entries, c.params)),
    "check": (
        "(jobs, workers, variant, params)",
        lambda c: (list(c.jobs), c.workers, c.variant, c.params),
    ),
    "cache_files": ("(jobs, params, inputs)", lambda c: (list(c.jobs), c.params, c.inputs)),
    "start": (
        "(variant, workers, params, jobs, inputs)",
        lambda c: (c.variant, c.workers, c.params, list(c.jobs), {**c.inputs, "opener": c.opener}),
    ),
    "verify": (
        "(results, root, entries, params, inputs)",
        lambda c, r: (r, c.root, c.entries, c.params, c.inputs),
    ),
}
_VARIANT_FORMER = "(workers, params, jobs)"
_warned: set[tuple[str, str]] = set()


def _required(fn) -> int | None:
    """How many positional arguments ``fn`` requires (None: it takes any number)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in positional and p.default is p.empty for p in params)


def _former(fn, form: str) -> bool:
    """Whether ``fn`` takes the former ``form`` of its hook (its count of arguments)."""
    return _required(fn) == form.count(",") + 1


def _deprecated(where: str, hook: str, form: str) -> None:
    if (where, hook) in _warned:
        return
    _warned.add((where, hook))
    warnings.warn(
        f"{where}: {hook}{form} is the former phase contract; take the trial's context "
        f"instead ({hook}(ctx, ...), docs/adding-a-phase.md)",
        DeprecationWarning,
        stacklevel=3,
    )


def call_hook(phase: Phase, hook: str, ctx: TrialContext, *args):
    """``phase.<hook>(ctx, *args)`` for the trial hooks jobs, check, cache_files, start and
    verify (args: results), or in its former form where the phase overrides the hook so (a
    DeprecationWarning once)."""
    method = getattr(phase, hook)
    form, arguments = _FORMER[hook]
    if not _former(method, form):
        return method(ctx, *args)
    _deprecated(type(phase).__name__, hook, form)
    return method(*arguments(ctx, *args))


def start_variant(variant: Variant, ctx: TrialContext) -> Runner:
    """``variant.start(ctx)``, or ``start(workers, params, jobs)`` where the variant still
    starts in that former form (a DeprecationWarning once)."""
    if not _former(variant.start, _VARIANT_FORMER):
        return variant.start(ctx)
    _deprecated(f"variant {variant.name}", "start", _VARIANT_FORMER)
    return variant.start(ctx.workers, ctx.params, list(ctx.jobs))
