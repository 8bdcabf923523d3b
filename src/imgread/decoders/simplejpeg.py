"""The simplejpeg decoder, ``simplejpeg`` (libjpeg-turbo underneath), JPEG only:
``decode_jpeg(colorspace="RGB")``, with ``min_width``/``min_height`` for the 224 crop so that
the library picks the DCT scale, and ``buffer=`` to decode straight into the caller's array.
"""

from __future__ import annotations

from imgread.decoders.base import (
    JPEG_ONLY,
    SNIFF_BYTES,
    expect_shape,
    finish,
    header_size,
    jpeg_only,
    make_decoder,
    require_format,
    resize_target,
    sniff,
    source_bytes,
)


def _simplejpeg(src, output):
    import simplejpeg

    data = source_bytes(src)
    require_format(sniff(data[:SNIFF_BYTES]), JPEG_ONLY)
    if output == "full":
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
    tw, th = resize_target(*header_size(data))
    rgb = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=tw, min_height=th)
    return finish(rgb, output)


def _simplejpeg_into(src, out) -> None:
    import simplejpeg

    data = source_bytes(src)
    require_format(sniff(data[:SNIFF_BYTES]), JPEG_ONLY)
    height, width = simplejpeg.decode_jpeg_header(data)[:2]
    expect_shape((height, width, 3), out)
    simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)


def _simplejpeg_version():
    import simplejpeg

    return f"simplejpeg {simplejpeg.__version__}"


SIMPLEJPEG = make_decoder(
    "simplejpeg",
    _simplejpeg,
    _simplejpeg_version,
    jpeg_only,
    "simplejpeg.decode_jpeg(colorspace='RGB'), min_width/min_height for a resized output",
    into_fn=_simplejpeg_into,
)
