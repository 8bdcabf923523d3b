# One job per (phase, variant, the phase's keys, n, workers, repetition). The flush happens inside the job,
# immediately before timing: a separate flush job could not guarantee a cold cache, because
# Snakemake may run other jobs (or itself read files) between the two, and nothing would
# check the state at the moment the clock starts. The job measures residency right there.
#
# `timing=1` is limited to 1 globally by profiles/default, so no two trials ever overlap,
# whatever --cores says. On SLURM (profiles/slurm) trials run in job groups, many one after
# another in one allocation of an exclusive node: `timing` is scoped per node there, and
# `shared_storage` (cold reads of the dataset where it is) stays 1 on the whole cluster.
rule trial:
    input:
        manifest=MANIFEST_OF,
        verified=VERIFIED_OF,
        reference=reference_input,
        cache=cache_input,
        shards=shards_input,
        storage=storage_check_input,
    output:
        TRIAL_RECORD,
    log:
        trial_log(TRIAL_RECORD),
    group:
        trial_group
    conda:
        "../../envs/imgread.yaml"
    resources:
        timing=1,
        shared_storage=shared_storage,
    params:
        cache=cache_settings,
        storage=storage_settings,
    script:
        "../scripts/trial.py"


# The same trial on one of cluster.partitions (a machine type): its own folder, its partition.
use rule trial as trial_on with:
    output:
        TRIAL_RECORD_ON,
    log:
        trial_log(TRIAL_RECORD_ON),
    group:
        trial_group
    resources:
        timing=1,
        shared_storage=shared_storage,
        slurm_partition=partition_of,
