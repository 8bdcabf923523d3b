"""Check every dataset file against the manifest's sha256, once per workflow run."""

import sys

from imgread.dataset import verify_hashes

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake is injected)
verify_hashes(snakemake.input.manifest)  # noqa: F821
