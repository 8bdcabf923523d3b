"""A toy decoder that crashes the process that calls it on a marked file: a segfault for a file
holding ``SEGV``, an abort for ``ABRT``, an endless loop for ``HANG``, a memory hog for
``HOG``; any other file is decoded by Pillow. It proves the sandbox contains what a C library
can do (imgread.decoders.sandbox)."""

from __future__ import annotations

import ctypes
import os

import numpy as np
from PIL import Image


def decode(path: str, output: str = "full") -> np.ndarray:
    """Crash, hang or hog on a marked file; Pillow's RGB array otherwise."""
    data = open(path, "rb").read()
    if b"SEGV" in data:
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    if b"ABRT" in data:
        os.abort()
    if b"HANG" in data:
        while True:
            pass
    if b"HOG" in data:
        hog = []
        while True:
            hog.append(bytearray(64 << 20))
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))
