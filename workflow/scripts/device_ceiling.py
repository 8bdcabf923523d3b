"""Measure the device ceiling of the dataset's files (imgread.instruments.ceiling) into a JSON
file."""

import sys

from imgread.instruments.ceiling import measure_device
from imgread.util import write_json_atomic

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake is injected)
s, c = snakemake.params.settings, snakemake.params.cache  # noqa: F821
result = measure_device(
    snakemake.input.manifest,  # noqa: F821
    jobs=s["jobs"],
    repetitions=s["repetitions"],
    method=s["method"],
    cache_method=c["method"] if c["method"] in ("fadvise", "drop_caches") else "fadvise",
    max_resident_fraction=c["max_resident_fraction"],
)
write_json_atomic(snakemake.output[0], result, indent=2)  # noqa: F821
print(
    f"device ceiling: {result['device_mb_per_s']:.0f} MB/s with {result['best_jobs']} readers "
    f"({result['method']}, {result['fio_version']})",
    file=sys.stderr,
)
