"""Build the decoded cache of one decoder (uint8 .npy and the seed's pickle of tensors). Where
the decoder refuses some of the dataset's kept images (on_invalid keep), its cache cells are
not measured: the job writes that line in cache.json and empty cache files instead."""

import os
import sys

from imgread.dataset.refused import cell_refusal
from imgread.phases.dataloader.decoded_cache import build
from imgread.util import write_json_atomic

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake is injected)
o, w = snakemake.output, snakemake.wildcards  # noqa: F821
out = o.info.rsplit("/", 1)[0]
line = cell_refusal(snakemake.input.manifest, snakemake.params.n, w.decoder, w.dataset)  # noqa: F821
if line:
    for path in (o.npy, o.pickle, o.labels):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "wb").close()
    write_json_atomic(o.info, {"refused": line}, indent=2)
    print(line, file=sys.stderr)
    sys.exit(0)
info = build(snakemake.input.manifest, w.decoder, out, n=snakemake.params.n)  # noqa: F821
print(info, file=sys.stderr)
