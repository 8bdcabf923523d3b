"""Accelerator profiles (config ``accelerators:``): what an accelerator runs and the images
per second it consumes at 100 % busy, batch_size / step_s as MLPerf Storage's DLIO emulates a
training step, or images_per_s (docs/accelerators.md). Light (no pandas, no scipy): the
workflow checks the profiles at every parse (imgread.plan.checks); imgread.answer.projections
projects the training rows onto them.
"""

from __future__ import annotations

from dataclasses import dataclass

from imgread.errors import UserError


@dataclass(frozen=True)
class Accelerator:
    """One accelerator profile: what it runs and the images/s it consumes at 100 % busy."""

    name: str
    runs: str
    images_per_s: float
    source: str = ""
    batch_size: int | None = None
    step_s: float | None = None

    @property
    def label(self) -> str:
        """'h100 (ResNet-50 training, 1786 images/s)'."""
        return f"{self.name} ({self.runs}, {self.images_per_s:.0f} images/s)"


def profiles(entries) -> list[Accelerator]:
    """The config's ``accelerators:`` list as Accelerators; UserError naming the field where
    a profile gives neither batch_size + step_s nor images_per_s, or both, or a bad value."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise UserError(f"config 'accelerators': a list of profiles, got {type(entries).__name__}")
    out, seen = [], set()
    for i, e in enumerate(entries):
        where = f"accelerators[{i}]"
        if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not e["name"]:
            raise UserError(f"config '{where}.name': each profile needs a name, got {e!r}")
        if e["name"] in seen:
            raise UserError(
                f"config '{where}.name': {e['name']!r} is used twice; give each its own"
            )
        seen.add(e["name"])
        out.append(_profile(e, where))
    return out


def _positive(e: dict, key: str, where: str, kind=float) -> float | None:
    v = e.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
        raise UserError(f"config '{where}.{key}': a number above 0, got {v!r}")
    if kind is int and v != int(v):
        raise UserError(f"config '{where}.{key}': a whole number of images, got {v!r}")
    return kind(v)


def _profile(e: dict, where: str) -> Accelerator:
    batch = _positive(e, "batch_size", where, int)
    step = _positive(e, "step_s", where)
    rate = _positive(e, "images_per_s", where)
    if rate is not None and (batch is not None or step is not None):
        raise UserError(
            f"config '{where}.images_per_s': give images_per_s or batch_size + step_s, not both"
        )
    if rate is None:
        if batch is None or step is None:
            missing = "step_s" if batch is not None else "batch_size"
            raise UserError(
                f"config '{where}.{missing}': a profile needs batch_size and step_s (a "
                "training step's images and seconds at 100 % busy), or images_per_s"
            )
        rate = batch / step
    return Accelerator(
        name=e["name"],
        runs=str(e.get("runs") or "the user's model"),
        images_per_s=float(rate),
        source=str(e.get("source") or "the config"),
        batch_size=batch,
        step_s=step,
    )
