"""Checksums of each image decoded sequentially (the reference for delivered pixels)."""

import sys

from imgread.dataset.manifest import read_manifest
from imgread.decoders.reference import write_reference

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake is injected)
w = snakemake.wildcards  # noqa: F821
manifest = read_manifest(snakemake.input.manifest)  # noqa: F821
entries = manifest.subset(snakemake.params.n)  # noqa: F821
write_reference(snakemake.output[0], manifest.root, entries, w.decoder, w.output)  # noqa: F821
print(f"{w.decoder}/{w.output}: {len(entries)} reference checksums", file=sys.stderr)
