rule dataset:
    output:
        manifest=MANIFEST,
    log:
        f"results/logs/dataset/{DATASET}.log",
    conda:
        "../../envs/imgread.yaml"
    params:
        settings=dataset_settings,
    script:
        "../scripts/dataset.py"


# The full sha256 check runs once, here, never inside a trial: hashing reads every file, which
# would warm the page cache a load trial needs cold and cost seconds per trial.
rule verify_dataset:
    input:
        manifest=MANIFEST,
    output:
        touch(VERIFIED),
    log:
        f"results/logs/dataset/{DATASET}.verify.log",
    conda:
        "../../envs/imgread.yaml"
    script:
        "../scripts/verify_dataset.py"
