"""The decoder registry: name -> (path or bytes, output) -> H x W x 3 ``uint8`` RGB array.

Every decoder returns the stored pixel grid: EXIF orientation is *not* applied by any of them
(OpenCV, which would apply it, is told ``IMREAD_IGNORE_ORIENTATION``), so all of them return the
same shape for the same file and a pipeline that needs upright images pays the same transpose
whichever it uses.

Outputs:
- ``full``: the image as decoded;
- ``crop224``: the ImageNet evaluation transform, shorter side resized to 256 then a centre crop
  of 224 x 224. The resize is one implementation for every decoder, :func:`resize_crop`
  (OpenCV ``cv2.resize`` with ``INTER_AREA``); decoders that can decode a JPEG at a reduced DCT
  scale (``pillow-draft``, ``opencv``, ``simplejpeg``, ``turbojpeg``) first pick the smallest
  scale whose output still covers 256 on the shorter side, so the same resize then has less to
  do. Other formats are decoded at full size, then resized the same way.

Formats: every decoder declares the formats it decodes (``Decoder.formats``, a subset of
:data:`FORMATS`, what the installed libraries can do: Pillow's and OpenCV's AVIF and WebP
depend on their build). :func:`format_of` sniffs a file's format from its first bytes and
:func:`can_decode` says whether a decoder takes it; a decoder given another format raises
:class:`UnsupportedFormatError` (an ImageDecodeError naming the decoder and the format).

Availability: a decoder whose library is not installed here (``turbojpeg`` without the system's
libturbojpeg) stays registered; ``Decoder.missing()`` says why in one line, :func:`warm_up` and
every decode raise :class:`DecoderUnavailable` (a UserError) with that line.

OpenCV runs single-threaded here (``cv2.setNumThreads(1)``), so that every decoder's
sequential rate is a one-core rate and a pool of N workers uses N cores.

``decode_into`` writes a full-size decode into a caller's array (a shared-memory slot) with at
most one copy and no buffer allocated per image: simplejpeg and turbojpeg decode straight into
it, OpenCV's BGR->RGB conversion writes it, Pillow decodes into a per-thread scratch image that
the one RGBX->RGB pack writes from.

Layout: :mod:`~imgread.decoders.base` (the :class:`Decoder` contract, outputs and crop
geometry, format sniffing, the errors, :func:`checksum`), :mod:`~imgread.decoders.registry`
(:data:`DECODERS`, :func:`get_decoder`, :func:`can_decode`, :func:`versions`, :func:`warm_up`:
the built-ins and the plug-ins of the ``imgread.decoders`` entry-point group), one module per
library (``pillow``: pillow and pillow-draft, ``opencv``, ``simplejpeg``, ``turbojpeg``), and
``allocator`` and ``reference``. Adding a decoder: docs/adding-a-decoder.md.

This ``__init__`` re-exports the public names of its own modules (within the room, no other
room's), so that callers keep ``from imgread.decoders import DECODERS, CROP, checksum, ...``.
"""

from imgread.decoders import allocator
from imgread.decoders.base import (
    CROP,
    FORMATS,
    OUTPUTS,
    RESIZE_NAME,
    RESIZE_SHORTER,
    UNKNOWN,
    Decoder,
    DecoderUnavailable,
    UnsupportedFormatError,
    checksum,
    format_of,
    output_shape,
    resize_crop,
    resize_target,
)
from imgread.decoders.registry import (
    DECODERS,
    can_decode,
    get_decoder,
    missing,
    reserve,
    versions,
    warm_up,
)
from imgread.decoders.turbojpeg import TJ_FLAGS, TURBOJPEG_PIN, TURBOJPEG_SYSTEM

__all__ = [
    "CROP",
    "DECODERS",
    "FORMATS",
    "OUTPUTS",
    "RESIZE_NAME",
    "RESIZE_SHORTER",
    "TJ_FLAGS",
    "TURBOJPEG_PIN",
    "TURBOJPEG_SYSTEM",
    "UNKNOWN",
    "Decoder",
    "DecoderUnavailable",
    "UnsupportedFormatError",
    "allocator",
    "can_decode",
    "checksum",
    "format_of",
    "get_decoder",
    "missing",
    "output_shape",
    "reserve",
    "resize_crop",
    "resize_target",
    "versions",
    "warm_up",
]
