rule dataset:
    output:
        manifest=MANIFEST_OF,
    log:
        "results/logs/dataset/{dataset}.log",
    group:
        "prepare"
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
        manifest=MANIFEST_OF,
    output:
        touch(VERIFIED_OF),
    log:
        "results/logs/dataset/{dataset}.verify.log",
    group:
        "prepare"
    conda:
        "../../envs/imgread.yaml"
    script:
        "../scripts/verify_dataset.py"


# The checksums delivered pixels are checked against: each image decoded sequentially by the
# decoder, once per (decoder, output), outside any trial.
rule decode_reference:
    input:
        manifest=MANIFEST_OF,
        verified=VERIFIED_OF,
    output:
        f"{DATASET_OF}/reference/{{decoder}}_{{output}}.csv",
    log:
        "results/logs/dataset/{dataset}.reference.{decoder}_{output}.log",
    group:
        "prepare"
    conda:
        "../../envs/imgread.yaml"
    resources:
        timing=1,
    params:
        n=reference_size,
    script:
        "../scripts/decode_reference.py"


# The seed's third recipe: decode once, keep the preprocessed 224 crops (a uint8 .npy and the
# seed's pickle of tensors). Built once per decoder, timed (build seconds and bytes on disk go
# to cache.json), one at a time like a trial.
rule decoded_cache:
    input:
        manifest=MANIFEST_OF,
        verified=VERIFIED_OF,
    output:
        info=f"{CACHE_DIR}/{{decoder}}/cache.json",
        npy=f"{CACHE_DIR}/{{decoder}}/images_u8.npy",
        pickle=f"{CACHE_DIR}/{{decoder}}/tensors.pkl",
        labels=f"{CACHE_DIR}/{{decoder}}/labels.npy",
    log:
        "results/logs/dataset/{dataset}.cache.{decoder}.log",
    group:
        "prepare"
    conda:
        "../../envs/imgread.yaml"
    resources:
        timing=1,
    params:
        n=cache_size,
    script:
        "../scripts/decoded_cache.py"


# What the device allows: the cold sequential-read bandwidth of the dataset's own files (fio
# when installed, else an O_DIRECT reader), at several readers at once. Run once, one at a
# time like a trial, never during one; the load figure and the summary compare against it.
rule device_ceiling:
    input:
        manifest=MANIFEST_OF,
        verified=VERIFIED_OF,
    output:
        f"{DATASET_OF}/device_ceiling.json",
    log:
        "results/logs/dataset/{dataset}.device_ceiling.log",
    group:
        "prepare"
    conda:
        "../../envs/imgread.yaml"
    resources:
        timing=1,
    params:
        settings=config["ceiling"],
        cache=config["cache"],
    script:
        "../scripts/device_ceiling.py"


# A dataset packed into tar shards of {mb} MB (WebDataset's key.jpg + key.cls; imgread.dataset
# .shards): a derived dataset with its own index and checksums, made from the verified files.
# It reads every file, so it holds `timing` like a trial: never beside one.
rule shards:
    input:
        manifest=MANIFEST_OF,
        verified=VERIFIED_OF,
    output:
        index=f"{DATASET_OF}/shards/{{mb}}mb/shards.csv",
    log:
        "results/logs/dataset/{dataset}.shards-{mb}mb.log",
    group:
        "prepare"
    conda:
        "../../envs/imgread.yaml"
    resources:
        timing=1,
    script:
        "../scripts/shards.py"
