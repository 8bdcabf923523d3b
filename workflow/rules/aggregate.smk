# One rule reads every trial record (declared inputs, never a glob) and writes the tables, the
# answer (recommendation), the scaling fits, the ceilings, what the study measured
# (study.json, from the records) and the report's text written from it.
TABLE_CAPTIONS = ["dataloader_workers", "stream_producers", "scaling", "recommendation"]


rule aggregate:
    input:
        trials=trial_files(),
        caches=expand(f"{CACHE_DIR}/{{decoder}}/cache.json", decoder=CACHES),
        manifest=MANIFEST,
        device=DEVICE_CEILING,
        templates=expand(
            "workflow/report/{name}.rst", name=["workflow", *TABLE_CAPTIONS]
        ),
    output:
        trials="results/tables/trials.csv",
        frames="results/tables/frames.csv",
        summary="results/tables/summary.csv",
        speedup="results/tables/speedup.csv",
        load_md="results/tables/load_table.md",
        decode_md="results/tables/decode_table.md",
        pipeline_md="results/tables/decode_pipeline.md",
        caches="results/tables/decoded_cache.csv",
        loader_workers=report(
            "results/tables/dataloader_workers.csv",
            caption="../../results/report/dataloader_workers.rst",
            category="Tables",
        ),
        stream_producers=report(
            "results/tables/stream_producers.csv",
            caption="../../results/report/stream_producers.rst",
            category="Tables",
        ),
        scaling=report(
            "results/tables/scaling.csv",
            caption="../../results/report/scaling.rst",
            category="Tables",
        ),
        recommendation=report(
            "results/tables/recommendation.csv",
            caption="../../results/report/recommendation.rst",
            category="Recommendation",
        ),
        recommendation_md="results/tables/recommendation.md",
        ceilings="results/tables/ceilings.csv",
        study="results/tables/study.json",
        report_text=REPORT_TEXT,
        captions=expand("results/report/{name}.rst", name=TABLE_CAPTIONS),
    log:
        "results/logs/aggregate.log",
    localrule: True
    conda:
        "../../envs/imgread.yaml"
    params:
        analysis=config["analysis"],
    script:
        "../scripts/aggregate.py"
