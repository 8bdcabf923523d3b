"""A config's ``searches:``: each a bounded search over one searchable grid key of a phase
(Phase.search_keys, imgread.trial.search), one workflow job that runs every probe as a whole
trial (workflow/rules/search.smk). Checked here, before any job, in one line per problem
naming the search and the field; planned from the config alone, as the grid is.
"""

from __future__ import annotations

from dataclasses import dataclass

from imgread.errors import UserError
from imgread.phases.registry import PHASES
from imgread.plan.grid import Cell, datasets, path_params, primary_dataset, storage_profiles
from imgread.storage import registry as storage

SEARCHES_DIR = "results/searches"  # <name>.json the summary, <name>/probe-<k>.json the probes
TABLE = "results/tables/searches.csv"  # its columns: imgread.trial.search_run.COLUMNS
DEFAULT_MAX_PROBES = 6


@dataclass(frozen=True)
class Search:
    """One search of the config: a fixed cell (every key but ``key``) and its probe budget.
    ``given`` the params as the config wrote them (the settings column); ``params`` every key
    of the phase resolved, storage included, ``key`` left at its default."""

    name: str
    phase: str
    variant: str
    dataset: str
    storage: str
    n: int
    workers: int
    key: str
    max_probes: int
    given: tuple[tuple[str, str], ...]
    params: tuple[tuple[str, str], ...]

    def probe_params(self, value=None) -> dict[str, str]:
        """The params of a probe at ``value`` of the key (None: the key's default), as a trial
        path holds them (imgread.plan.grid.path_params)."""
        phase = PHASES[self.phase]
        params = dict(self.params)
        if value is not None:
            params[self.key] = phase_param(phase, self.key).check(value)
        return path_params(phase, params)

    def cell(self) -> Cell:
        """The search's cell (at the key's default): what its inputs are made for."""
        params = tuple(self.probe_params().items())
        return Cell(self.phase, self.variant, self.n, self.workers, 0, params, dataset=self.dataset)

    @property
    def settings(self) -> str:
        """The fixed params as the config gave them: 'k=v, k=v' ('-' where none)."""
        return ", ".join(f"{k}={v}" for k, v in self.given) or "-"

    def output(self) -> str:
        """The search's summary: results/searches/<name>.json."""
        return f"{SEARCHES_DIR}/{self.name}.json"


def phase_param(phase, name: str):
    """The phase's Param ``name`` (KeyError where it has none)."""
    return next(p for p in phase.params if p.name == name)


def searches(config: dict) -> list[Search]:
    """The config's searches, checked (UserError naming the search and the field)."""
    out, seen = [], set()
    for i, raw in enumerate(config.get("searches") or []):
        where = f"config 'searches[{i}]' ({raw.get('name', '?')})"
        if raw["name"] in seen:
            raise UserError(
                f"{where}.name: {raw['name']!r} is used twice; each search needs its own"
            )
        seen.add(raw["name"])
        out.append(_search(config, raw, where))
    return out


def _search(config: dict, raw: dict, where: str) -> Search:
    phase = PHASES.get(raw["phase"])
    if phase is None:
        raise UserError(
            f"{where}.phase: unknown phase {raw['phase']!r}; choose one of {list(PHASES)}"
        )
    if raw["variant"] not in phase.variants:
        raise UserError(
            f"{where}.variant: {raw['phase']} has no variant {raw['variant']!r}; "
            f"choose one of {list(phase.variants)}"
        )
    key = raw["key"]
    if key not in phase.search_keys:
        raise UserError(
            f"{where}.key: {raw['phase']} cannot search {key!r}; its searchable keys: "
            f"{sorted(phase.search_keys) or 'none'}"
        )
    given = {
        k: str(v).lower() if isinstance(v, bool) else str(v)
        for k, v in raw.get("params", {}).items()
    }
    if key in given:
        raise UserError(f"{where}.params: {key} is the key searched; leave it out of params")
    dataset = raw.get("dataset") or primary_dataset(config)
    if dataset not in datasets(config):
        raise UserError(
            f"{where}.dataset: {dataset!r} is not one of the config's datasets "
            f"{list(datasets(config))}"
        )
    name = searched_storage(raw)
    given.pop("storage", None)
    profiles = storage_profiles(config)
    if name not in profiles:
        raise UserError(
            f"{where}.storage: {name!r} is not defined; the config's storage list has "
            f"{sorted(profiles)}"
        )
    params = _resolved(phase, raw["variant"], {**given, **_storage(phase, name)}, where)
    _check_workers(phase, raw["variant"], raw["workers"], where)
    count = datasets(config)[dataset].get("count")
    if count is not None and raw["n"] > count:
        raise UserError(f"{where}.n: {raw['n']} images, but dataset {dataset} has {count}")
    return Search(
        raw["name"],
        raw["phase"],
        raw["variant"],
        dataset,
        name,
        int(raw["n"]),
        int(raw["workers"]),
        key,
        int(raw.get("max_probes", DEFAULT_MAX_PROBES)),
        tuple(given.items()),
        tuple(params.items()),
    )


def _storage(phase, name: str) -> dict[str, str]:
    return {"storage": name} if phase.reads_storage else {}


def _resolved(phase, variant: str, given: dict, where: str) -> dict[str, str]:
    try:
        params = phase.resolve(given)
    except UserError as exc:
        raise UserError(f"{where}.params: {exc}") from None
    why = phase.unsupported(variant, params)
    if why:
        raise UserError(f"{where}.params: {why}")
    return params


def _check_workers(phase, variant: str, workers: int, where: str) -> None:
    v = phase.variants[variant]
    if workers < v.min_workers:
        raise UserError(
            f"{where}.workers: {phase.name}/{variant} takes at least {v.min_workers}, not {workers}"
        )
    if not v.parallel and workers != 1:
        raise UserError(
            f"{where}.workers: {phase.name}/{variant} is not parallel: workers must be 1"
        )


def searched_storage(raw: dict) -> str:
    """The storage profile a config's search reads: its ``storage``, else the ``storage`` in
    its params, else local."""
    return raw.get("storage") or (raw.get("params") or {}).get("storage") or storage.DEFAULT
