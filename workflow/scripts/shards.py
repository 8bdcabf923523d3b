"""Pack one dataset into tar shards of {mb} MB (imgread.dataset.shards)."""

import sys

from imgread.dataset.shards import pack
from imgread.util import exit_on_sigterm

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake is injected)
exit_on_sigterm()  # Snakemake stops jobs with SIGTERM: clean up as on Ctrl-C
index = pack(snakemake.input.manifest, int(snakemake.wildcards.mb))  # noqa: F821
print(f"packed into {index}", file=sys.stderr)
