# One job per (phase, variant, the phase's keys, n, workers, repetition). The flush happens inside the job,
# immediately before timing: a separate flush job could not guarantee a cold cache, because
# Snakemake may run other jobs (or itself read files) between the two, and nothing would
# check the state at the moment the clock starts. The job measures residency right there.
#
# `timing=1` is limited to 1 globally by profiles/default, so no two trials ever overlap,
# whatever --cores says.
rule trial:
    input:
        manifest=MANIFEST,
        verified=VERIFIED,
        reference=reference_input,
        cache=cache_input,
    output:
        f"{TRIALS_DIR}/{{phase}}/{{variant}}/{{params}}/n{{n}}_w{{w}}_r{{r}}.json",
    log:
        f"results/logs/trials/{DATASET}/{{phase}}/{{variant}}/{{params}}/n{{n}}_w{{w}}_r{{r}}.log",
    conda:
        "../../envs/imgread.yaml"
    resources:
        timing=1,
    params:
        cache=cache_settings,
    script:
        "../scripts/trial.py"
