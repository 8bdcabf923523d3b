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


# The checksums delivered pixels are checked against: each image decoded sequentially by the
# decoder, once per (decoder, output), outside any trial.
rule decode_reference:
    input:
        manifest=MANIFEST,
        verified=VERIFIED,
    output:
        f"{REFERENCE_DIR}/{{decoder}}_{{output}}.csv",
    log:
        f"results/logs/dataset/{DATASET}.reference.{{decoder}}_{{output}}.log",
    conda:
        "../../envs/imgread.yaml"
    resources:
        timing=1,
    params:
        n=reference_size,
    script:
        "../scripts/decode_reference.py"
