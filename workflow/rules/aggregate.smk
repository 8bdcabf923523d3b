rule aggregate:
    input:
        trials=trial_files(),
        caches=expand(f"{CACHE_DIR}/{{decoder}}/cache.json", decoder=CACHES),
    output:
        trials="results/tables/trials.csv",
        summary="results/tables/summary.csv",
        speedup="results/tables/speedup.csv",
        load_md="results/tables/load_table.md",
        decode_md="results/tables/decode_table.md",
        pipeline_md="results/tables/decode_pipeline.md",
        caches="results/tables/decoded_cache.csv",
    log:
        "results/logs/aggregate.log",
    conda:
        "../../envs/imgread.yaml"
    params:
        analysis=config["analysis"],
    script:
        "../scripts/aggregate.py"
