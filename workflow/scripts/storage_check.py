"""Whether this machine can emulate one storage profile: its kind's check, written where the
profile's trials read it (imgread.plan.storage)."""

import sys

from imgread.plan.storage import check_profile, write_check

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake is injected)
result = check_profile(snakemake.params.profile)  # noqa: F821
write_check(snakemake.output[0], result)  # noqa: F821
print(result["line"] or f"storage {result['profile']}: can be emulated here", file=sys.stderr)
