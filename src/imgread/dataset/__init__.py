"""Datasets: a deterministic synthetic JPEG set, or a sample of a user's own images.

Both write ``manifest.csv`` (see :mod:`imgread.dataset.manifest`) in a fixed shuffled order, so the
subset of n images is the first n rows and a larger n contains every image of a smaller n.

- :mod:`~imgread.dataset.synthesis`: :func:`generate`, photo-like JPEGs cut from the textures
  of :mod:`~imgread.dataset.textures`;
- :mod:`~imgread.dataset.sampling`: :func:`sample`, a seeded copy of the user's own photos;
- :mod:`~imgread.dataset.identity`: the sha256 that identifies each file, :func:`verify_hashes`;
- :mod:`~imgread.dataset.folder`: the names in a dataset folder and how it is (re)made.
"""

from imgread.dataset.folder import (
    DEFAULT_SEED,
    IMAGES_DIR,
    INFO_NAME,
    SKIPPED_NAME,
    SOURCES_NAME,
    prepare_out_dir,
)
from imgread.dataset.identity import content_id, verify_hashes
from imgread.dataset.sampling import CANDIDATE_EXTENSIONS, find_candidates, sample
from imgread.dataset.synthesis import (
    DEFAULT_COUNT,
    DEFAULT_HEIGHT,
    DEFAULT_TARGET_BYTES,
    DEFAULT_WIDTH,
    SIZE_TOLERANCE,
    GenerateParams,
    generate,
)
from imgread.dataset.textures import make_texture

__all__ = [
    "CANDIDATE_EXTENSIONS",
    "DEFAULT_COUNT",
    "DEFAULT_HEIGHT",
    "DEFAULT_SEED",
    "DEFAULT_TARGET_BYTES",
    "DEFAULT_WIDTH",
    "IMAGES_DIR",
    "INFO_NAME",
    "SIZE_TOLERANCE",
    "SKIPPED_NAME",
    "SOURCES_NAME",
    "GenerateParams",
    "content_id",
    "find_candidates",
    "generate",
    "make_texture",
    "prepare_out_dir",
    "sample",
    "verify_hashes",
]
