"""Make one dataset of the config's list: sample the user's folder if its source is set,
else generate."""

import sys

from imgread.dataset import GenerateParams, generate, sample
from imgread.util import exit_on_sigterm

sys.stderr = open(snakemake.log[0], "w", buffering=1)  # noqa: F821 (snakemake is injected)
exit_on_sigterm()  # Snakemake stops jobs with SIGTERM: clean up as on Ctrl-C
s = snakemake.params.settings  # noqa: F821
out = snakemake.output.manifest.rsplit("/", 1)[0]  # noqa: F821
if s["source"]:
    sample(
        s["source"],
        out,
        s["count"],
        seed=s["seed"],
        include_png=s["include_png"],
        on_invalid=s["on_invalid"],
    )
else:
    generate(
        out,
        GenerateParams(
            count=s["count"],
            width=s["width"],
            height=s["height"],
            target_bytes=s["target_bytes"],
            seed=s["seed"],
            # (left out of the settings where at their defaults: imgread.plan.grid)
            size_spread=s.get("size_spread", 0.0),
            format=s.get("format", "jpeg"),
            quality=s.get("quality"),
            subsampling=s.get("subsampling", "4:2:0"),
            progressive=s.get("progressive", False),
        ),
    )
