"""Where a trial's record lives: one template, used by the workflow's rules and the package.

``results/trials/<dataset>/[on-<machine>/]<phase>/<variant>/<params>/n<N>_w<W>_r<R>.json``;
the ``{name}`` fields of :data:`TRIAL_TEMPLATE` are the trial rule's wildcards.
"""

from __future__ import annotations

SEPARATOR = "+"
TRIAL_TEMPLATE = "{phase}/{variant}/{params}/n{n}_w{w}_r{r}.json"
MACHINE_TEMPLATE = "on-{machine}/" + TRIAL_TEMPLATE  # a cell on one of cluster.partitions


def params_segment(params: dict[str, str]) -> str:
    """The trial path's folder for a cell's params: 'decoder-pillow+output-full+...'.

    Not commas: a group job on a cluster names its jobs' wildcards as comma-separated
    WILDCARD=VALUE pairs (--target-jobs), so a value must not contain one."""
    return SEPARATOR.join(f"{k}-{v}" for k, v in params.items()) or "default"


def parse_segment(segment: str) -> dict[str, str]:
    """Inverse of :func:`params_segment`."""
    if segment == "default":
        return {}
    return dict(part.split("-", 1) for part in segment.split(SEPARATOR))


def trial_path(
    trials_dir: str,
    phase: str,
    variant: str,
    params: dict[str, str],
    n: int,
    w: int,
    r: int,
    machine: str = "",
) -> str:
    """The record's path for one trial (under on-<machine>/ where a partition is named)."""
    template = MACHINE_TEMPLATE if machine else TRIAL_TEMPLATE
    fields = dict(phase=phase, variant=variant, params=params_segment(params), n=n, w=w, r=r)
    return f"{trials_dir}/" + template.format(machine=machine, **fields)
