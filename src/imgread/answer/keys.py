"""The columns a cell, a baseline and a scaling curve are keyed by (every phase's grid keys,
from the registry). Shared by the analysis, the scaling fits, the study and the answer."""

from __future__ import annotations

from imgread.phases.registry import PARAM_COLUMNS

# A cell: the phase, the machine it ran on (the SLURM partition; "local" off a cluster), the
# dataset it read (its name), its variant, every phase's grid keys (NO_PARAM where a phase
# has no such key), images, workers.
NO_PARAM = "-"
CELL = ["phase", "machine", "dataset", "variant", *PARAM_COLUMNS, "n_images", "workers"]
BASELINE_KEYS = ["phase", "machine", "dataset", *PARAM_COLUMNS, "n_images"]  # a baseline's
CURVE = ["phase", "machine", "dataset", "variant", *PARAM_COLUMNS, "n_images"]  # speedup
