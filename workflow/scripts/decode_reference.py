"""Checksums of each image decoded sequentially (the reference for delivered pixels)."""

import sys

from imgread.dataset.manifest import read_manifest
from imgread.dataset.refused import read_refused
from imgread.decoders.reference import write_reference

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake is injected)
w = snakemake.wildcards  # noqa: F821
manifest = read_manifest(snakemake.input.manifest)  # noqa: F821
entries = manifest.subset(snakemake.params.n)  # noqa: F821
refused = read_refused(manifest.root).get(w.decoder, {})
if refused:  # on_invalid keep: its cells are not measured; the reference of what it reads
    entries = [e for e in entries if e.path not in refused]
    print(f"{w.decoder}: {len(refused)} kept images refused, left out", file=sys.stderr)
write_reference(snakemake.output[0], manifest.root, entries, w.decoder, w.output)  # noqa: F821
print(f"{w.decoder}/{w.output}: {len(entries)} reference checksums", file=sys.stderr)
