# One rule reads every trial record (declared inputs, never a glob) and writes the tables, each
# phase's own tables (Phase.tables), the answer (recommendation), the scaling fits, the
# ceilings, what the study measured (study.json, from the records) and the report's text.
TABLE_CAPTIONS = [*CAPTIONED_TABLES, "scaling", "recommendation"]


rule aggregate:
    input:
        trials=trial_files(),
        caches=CACHE_FILES,
        manifest=MANIFEST,
        manifests=MANIFESTS,
        device=DEVICE_CEILING,
        devices=DEVICE_CEILINGS,
        templates=[caption_template(name) for name in ["workflow", *TABLE_CAPTIONS]],
        searches=SEARCH_FILES,  # workflow/rules/search.smk
    output:
        trials="results/tables/trials.csv",
        frames="results/tables/frames.csv",
        summary="results/tables/summary.csv",
        speedup="results/tables/speedup.csv",
        phase_tables=[f"results/tables/{t.file}" for t in PHASE_TABLES if not t.caption],
        captioned_tables=[
            report(
                f"results/tables/{t.file}",
                caption=f"../../results/report/{t.stem}.rst",
                category="Tables",
            )
            for t in PHASE_TABLES
            if t.caption
        ],
        caches="results/tables/decoded_cache.csv",
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
        accelerators="results/tables/accelerators.csv",
        study="results/tables/study.json",
        searches="results/tables/searches.csv",
        report_text=REPORT_TEXT,
        captions=expand("results/report/{name}.rst", name=TABLE_CAPTIONS),
    log:
        "results/logs/aggregate.log",
    localrule: True
    conda:
        "../../envs/imgread.yaml"
    params:
        analysis=config["analysis"],
        accelerators=config["accelerators"],
    script:
        "../scripts/aggregate.py"
