"""Code to paste: for every answer row (imgread.answer.recommend.recommend's), the few lines of
Python that configure it in the user's own script, as measured: the readers' pool and its
size, the decode function of the row's decoder (full image or 224 crop), the DataLoader's
arguments or the peer library's pipeline (imgread.answer.snippet_loaders), the stream's
producer and its prefetch, and for an object store the client's configuration (the endpoint
is a variable the user sets, never a default address).

Each snippet is self-contained: it reads the image paths of a folder (``IMGREAD_DATA``, the
run's dataset folder by default), builds the loader and iterates it, leaving ``blobs`` (load:
the bytes of each file, in order), ``shapes`` (decode with delivery ``discard``: the workers
hand nothing back) or ``images`` (the pixels of each image in order: H x W x 3 uint8, or the
DataLoader's float32 samples, normalised as the seed's (x / 255 - 0.5) / 0.5). The workflow
test runs every block of a smoke run's recommendation.md and checks that result
(tests/workflow/snippets_check.py).

Each phase writes its own (``phases/<phase>/snippet.py``, from the pieces of
imgread.answer.snippet_parts): this module names no phase.
"""

from __future__ import annotations

import importlib.util

import pandas as pd

from imgread.phases.registry import PHASES, load_object

LOCAL_KINDS = ("local", "volume")


def parse(label: str) -> dict[str, str]:
    """'k=v, k=v' (a row's job or settings column) -> {k: v}; '-' -> {}."""
    if not label or label == "-":
        return {}
    return dict(part.split("=", 1) for part in label.split(", ") if "=" in part)


def title(row) -> str:
    """The block's title: phase, job, strategy and settings, as the table says them."""
    return f"{row.phase} | {row.job} | {row.variant} x{row.workers} | {row.settings}"


def is_remote(storage: str, kinds: dict[str, str] | None = None) -> bool:
    """Whether a storage profile is an object store: its kind where ``kinds`` knows it, else
    by name (``local`` and the volumes are files)."""
    if storage in (kinds or {}):
        return kinds[storage] not in LOCAL_KINDS
    return storage != "local" and "volume" not in storage


def builder(phase: str):
    """The phase's ``snippet(variant, workers, params, dataset) -> str``: its own
    ``snippet`` attribute ('module:function') where it declares one, else the ``snippet``
    function of the ``snippet`` module beside its class; None where it has neither (a
    plug-in phase without code to paste)."""
    ph = PHASES[phase]
    where = getattr(ph, "snippet", "")
    if not where:
        package, dot, _ = type(ph).__module__.rpartition(".")
        if not dot:  # a phase in a module of its own, outside any package: nothing beside it
            return None
        where = f"{package}.snippet"
    if ":" not in where:
        try:
            found = importlib.util.find_spec(where)
        except (ImportError, ValueError):  # its parent is a module, not a package
            found = None
        if found is None:
            return None
        where += ":snippet"
    return load_object(where)


def snippet(row, kinds: dict[str, str] | None = None) -> str:
    """The Python source that configures and runs ``row`` (a row of recommend()); '' where
    its phase has no snippet."""
    build = builder(row.phase)
    if build is None:
        return ""
    p = {**parse(row.job), **parse(row.settings)}
    p["remote"] = is_remote(p.get("storage", "local"), kinds)
    # (a recommendation made before datasets had names has none: the folder is the user's)
    return build(row.variant, int(row.workers), p, getattr(row, "dataset", "") or "")


def markdown_blocks(rec: pd.DataFrame, kinds: dict[str, str] | None = None) -> str:
    """The recommendation.md section: a fenced python block per answer row, titled by it."""
    if rec.empty:
        return ""
    out = ["", "## Code to paste", "", HOW]
    for r in rec.itertuples(index=False):
        if not snippet(r, kinds):
            continue
        out += ["", f"### {title(r)}", "", "```python", snippet(r, kinds).rstrip(), "```"]
    return "\n".join(out) + "\n"


def rst_blocks(rec: pd.DataFrame, kinds: dict[str, str] | None = None) -> str:
    """The report's section: a ``code-block:: python`` per answer row, titled by it."""
    if rec.empty:
        return ""
    out = ["", "**Code to paste.** " + HOW.replace("`", "``"), ""]
    for r in rec.itertuples(index=False):
        if not snippet(r, kinds):
            continue
        code = "\n".join(f"   {line}" if line else "" for line in snippet(r, kinds).splitlines())
        out += [f"*{title(r)}*", "", ".. code-block:: python", "", code, ""]
    return "\n".join(out) + "\n"


HOW = (
    "Each block configures its row as measured and runs it over the image files of `DATA` "
    "(set `IMGREAD_DATA`; an object store's address in `IMGREAD_ENDPOINT`, its bucket in "
    "`IMGREAD_BUCKET`); replace the list of files and the loop's body with your own. The "
    "tests run every block on the smoke run's images and check what it delivers."
)
