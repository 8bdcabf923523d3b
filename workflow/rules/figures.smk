# One rule per figure, each a report() output with its own caption. Only the figure settings
# and the tables are inputs, so changing a figure setting reruns the figures alone.
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
        output:
            png=report(
                f"results/figures/{_figure}.png",
                caption=f"../report/{_figure}.rst",
                category="Figures",
            ),
            svg=f"results/figures/{_figure}.svg",
        log:
            f"results/logs/figures/{_figure}.log",
        conda:
            "../../envs/imgread.yaml"
        params:
            figure=_figure,
            settings=config["figures"],
            dataset=config["dataset"],
            cache=config["cache"],
            host=HOST,
        script:
            "../scripts/figure.py"
