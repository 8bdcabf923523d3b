# One rule per figure, each a report() output with its own caption. Only the figure settings
# and the tables are inputs, so changing a figure setting reruns the figures alone. The
# caption is written here too, from the records (study.json), never from the config.
for _figure in FIGURE_NAMES:

    rule:
        name:
            f"figure_{_figure}"
        input:
            trials="results/tables/trials.csv",
            summary="results/tables/summary.csv",
            speedup="results/tables/speedup.csv",
            published="config/reference/published_decode.csv",
            caches="results/tables/decoded_cache.csv",
            frames="results/tables/frames.csv",
            scaling="results/tables/scaling.csv",
            device=DEVICE_CEILING,
            study="results/tables/study.json",
            template=caption_template(_figure),
        output:
            png=report(
                f"results/figures/{_figure}.png",
                caption=f"../../results/report/{_figure}.rst",
                category="Figures",
            ),
            svg=f"results/figures/{_figure}.svg",
            caption=f"results/report/{_figure}.rst",
        log:
            f"results/logs/figures/{_figure}.log",
        localrule: True
        conda:
            "../../envs/imgread.yaml"
        params:
            figure=_figure,
            settings=config["figures"],
        script:
            "../scripts/figure.py"
