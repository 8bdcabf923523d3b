"""Bad configs, generated: the smoke config with one field broken (a wrong type, a value out of
range, an unknown key, a reference to a dataset or storage profile no one defined), checked in
this process exactly as workflow/rules/common.smk checks a config before any job. Each is
either valid or refused with one line naming the field the generator broke; never a traceback.
A few of them also go through a real ``snakemake -n``
(tests/workflow/test_generated_configs_workflow.py).

The list of hand-picked bad configs (tests/workflow/test_robustness.py) says what each message
is; this says that no field, broken any of these ways, slips past the checks as a traceback."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imgread.errors import UserError

from ..support.helpers import check_like_the_workflow, smoke_config

UNKNOWN = "zz_not_a_key"
WRONG_TYPES = ["fast", 1.5, True, None, [], {}, [["x"]], {"a": 1}]
# (a huge count, e.g. repetitions: 10**15, makes the grid itself endless: not generated here,
# a schema maximum is the fix, left for a later round)
OUT_OF_RANGE = [-1, 0, -(10**9)]
EXAMPLES = 100  # in-process configs tried (the note of the edges issue gives the count)


def _nodes(tree, path=()):
    """Every (path, value) of a config tree, containers included."""
    yield path, tree
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _nodes(v, (*path, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _nodes(v, (*path, i))


def _set(tree, path, value):
    for part in path[:-1]:
        tree = tree[part]
    tree[path[-1]] = value


def _named(path) -> str:
    """The name of the field at ``path`` a message must show: its last key."""
    keys = [p for p in path if isinstance(p, str)]
    return keys[-1] if keys else ""


def _blocks(config):
    """Paths of every settings block of the phases (a dict with workers)."""
    return [
        p
        for p, v in _nodes(config["phases"], ("phases",))
        if isinstance(v, dict) and "workers" in v
    ]


def _break(config: dict, draw) -> tuple[str, tuple, tuple[str, ...]]:
    """Break one field of ``config`` in place; return (how, path, the words of which the
    message must hold one)."""
    how = draw(st.sampled_from(["type", "range", "unknown key", "dataset ref", "storage ref"]))
    nodes = [(p, v) for p, v in _nodes(config) if p]
    if how == "type":
        path, value = draw(st.sampled_from(nodes))
        new = draw(st.sampled_from([w for w in WRONG_TYPES if type(w) is not type(value)]))
        _set(config, path, new)
        return how, path, (_named(path),)
    if how == "range":
        ints = [(p, v) for p, v in nodes if type(v) is int]
        path, _ = draw(st.sampled_from(ints))
        _set(config, path, draw(st.sampled_from(OUT_OF_RANGE)))
        return how, path, (_named(path),)
    if how == "unknown key":
        dicts = [p for p, v in _nodes(config) if isinstance(v, dict)]
        path = draw(st.sampled_from(dicts))
        target = config
        for part in path:
            target = target[part]
        target[UNKNOWN] = 1
        return how, path, (UNKNOWN,)
    block = draw(st.sampled_from(_blocks(config)))
    key = "dataset" if how == "dataset ref" else "storage"
    _set(config, (*block, key), ["nope"])
    # a phase that reads no storage has no such key: then the key is what is wrong
    return how, (*block, key), ("nope", key)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same configs on every run and machine
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.data())
def test_a_config_broken_in_one_field_is_valid_or_refused_in_one_line_naming_it(data):
    config = smoke_config()
    how, path, words = _break(config, data.draw)
    try:
        check_like_the_workflow(config)
    except UserError as err:
        text = str(err)
        assert "\n" not in text, (how, path, text)
        assert any(w in text for w in words), f"{how} at {path}: does not name {words}: {text}"
    # valid is allowed (a float where a number is wanted, a list that may be empty ...):
    # anything else than UserError (a traceback) fails the test by propagating
