"""Build the decoded cache of one decoder (uint8 .npy and the seed's pickle of tensors)."""

import sys

from imgread.phases.dataloader.decoded_cache import build

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake is injected)
out = snakemake.output.info.rsplit("/", 1)[0]  # noqa: F821
info = build(snakemake.input.manifest, snakemake.wildcards.decoder, out, n=snakemake.params.n)  # noqa: F821
print(info, file=sys.stderr)
