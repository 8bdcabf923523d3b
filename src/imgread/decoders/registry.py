"""The decoders imgread knows: the built-in ones listed here, and any other package's decoder
registered under the ``imgread.decoders`` entry-point group (``name = "module:object"``, the
object a :class:`~imgread.decoders.base.Decoder`), as ``imgread.phases`` finds a phase. Each is
checked against the contract when it loads.

:data:`DECODERS` is computed once, at import, plug-ins included: the config check and the
phases' ``decoder`` choices read it when they are imported.
"""

from __future__ import annotations

import io
import re
from functools import cache

import numpy as np

from imgread.decoders import allocator, opencv, pillow, simplejpeg, turbojpeg
from imgread.decoders.base import FORMATS, UNKNOWN, Decoder, DecoderUnavailable
from imgread.plugins import by_name, entry_point_objects, name_problems

BUILTIN = (
    pillow.PILLOW,
    pillow.PILLOW_DRAFT,
    opencv.OPENCV,
    simplejpeg.SIMPLEJPEG,
    turbojpeg.TURBOJPEG,
)
ENTRY_POINT_GROUP = "imgread.decoders"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")
_OPTIONAL = ("count_fn", "into_fn", "formats_fn", "missing_fn", "reserve_fn")


def check_decoder(decoder: object, where: str, entry_name: str | None = None) -> Decoder:
    """The contract a decoder must meet, checked when it loads (RuntimeError naming ``where``
    and every problem): a Decoder with a lower-case name (the entry point's, for a plug-in),
    callable ``decode_fn`` and ``version_fn``, a description, optional hooks callable or None."""
    if not isinstance(decoder, Decoder):
        raise RuntimeError(
            f"decoder {where} is {type(decoder).__name__}, not an imgread.decoders.base.Decoder "
            "(make one with imgread.decoders.base.make_decoder)"
        )
    problems = name_problems(decoder.name, entry_name, _NAME)
    for field in ("decode_fn", "version_fn"):
        if not callable(getattr(decoder, field)):
            problems.append(f"{field} is {getattr(decoder, field)!r}, not a function")
    for field in _OPTIONAL:
        value = getattr(decoder, field)
        if value is not None and not callable(value):
            problems.append(f"{field} is {value!r}, neither a function nor None")
    if not isinstance(decoder.description, str) or not decoder.description.strip():
        problems.append("no description (one line: what it calls)")
    if problems:
        raise RuntimeError(f"decoder {where} breaks the decoder contract: {'; '.join(problems)}")
    return decoder


def _discover() -> dict[str, Decoder]:
    found = [(f"{d.decode_fn.__module__}:{d.name}", None, d) for d in BUILTIN]
    plugins = entry_point_objects(ENTRY_POINT_GROUP, "decoder")
    return by_name([*found, *plugins], check_decoder, "decoder")


DECODERS: dict[str, Decoder] = _discover()


def installed() -> list[str]:
    """The names of the decoders whose library is installed here, in registry order."""
    return [name for name, d in DECODERS.items() if d.available]


def get_decoder(name: str) -> Decoder:
    """The registered decoder; ValueError naming the allowed names otherwise."""
    try:
        return DECODERS[name]
    except KeyError:
        raise ValueError(f"unknown decoder {name!r}; choose one of {', '.join(DECODERS)}") from None


def can_decode(name: str, fmt: str) -> bool:
    """Whether decoder ``name`` decodes format ``fmt`` (one of FORMATS, or "unknown": False)
    here. Only the formats: whether its library is installed is ``Decoder.missing()``.
    ValueError for an unknown decoder or format."""
    d = get_decoder(name)
    if fmt != UNKNOWN and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt in d.formats


def missing() -> dict[str, str]:
    """{decoder name: why it cannot run here} for every registered decoder that cannot."""
    return {name: why for name, d in DECODERS.items() if (why := d.missing()) is not None}


@cache
def versions() -> dict[str, str]:
    """{decoder name: version string} for every registered decoder."""
    return {name: d.version() for name, d in DECODERS.items()}


def reserve(name: str, output: str, shapes) -> None:
    """Before the clock: this thread's scratch memory for the largest of ``shapes`` (H, W, 3)
    where the decoder's ``decode_into`` uses it, so that no image of a trial allocates it."""
    largest = max((h * w for h, w, _ in shapes), default=0)
    if output == "full" and (fn := get_decoder(name).reserve_fn) is not None and largest:
        fn(largest)


@cache
def _tiny_image(fmt: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 150)).save(buf, format=fmt.upper())
    return buf.getvalue()


def warm_up(name: str, output: str, allocator_name: str = "default") -> None:
    """Give this process the allocator (imgread.decoders.allocator), import the decoder's
    libraries and run each code path once on a tiny in-memory JPEG (a decoder of no JPEG: an
    image of the first format it declares), so that none of it lands in a timed region (run in
    every worker before the clock starts). DecoderUnavailable (a UserError saying what to
    install) where the decoder cannot run here."""
    allocator.apply(allocator_name)
    d = get_decoder(name)
    why = d.missing()
    if why is not None:
        raise DecoderUnavailable(why)
    fmt = "jpeg" if "jpeg" in d.formats else next((f for f in FORMATS if f in d.formats), "jpeg")
    tiny = _tiny_image(fmt)
    d.decode(tiny, output)
    if d.count_fn is not None:
        d.count_fn(tiny)
    if d.into_fn is not None:
        d.decode_into(tiny, "full", np.empty((48, 64, 3), np.uint8))
