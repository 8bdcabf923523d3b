# One job per search of the config (searches:, imgread.plan.searches): every probe a whole
# trial, run one after another inside the job (the next value follows from the last
# measurement), each probe's record in results/searches/<name>/probe-<k>.json, the summary in
# results/searches/<name>.json. `timing=1` as a trial: no probe overlaps another trial.
# Its inputs are a trial's, asked of the same input functions for the search's cell.
rule search:
    input:
        manifest=lambda w: MANIFEST_OF.format(dataset=SEARCH_OF[w.name].dataset),
        verified=lambda w: VERIFIED_OF.format(dataset=SEARCH_OF[w.name].dataset),
        reference=_of_cell(reference_input),
        cache=_of_cell(cache_input),
        shards=_of_cell(shards_input),
        storage=_of_cell(storage_check_input),
    output:
        "results/searches/{name}.json",
    log:
        "results/logs/searches/{name}.log",
    wildcard_constraints:
        name="|".join(re.escape(n) for n in SEARCH_OF) or "(?!)",
    conda:
        "../../envs/imgread.yaml"
    resources:
        timing=1,
        shared_storage=_of_cell(shared_storage),
    params:
        cache=_of_cell(cache_settings),
        storage=_of_cell(storage_settings),
        search=lambda w: SEARCH_OF[w.name].__dict__,
    script:
        "../scripts/search.py"
