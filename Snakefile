# imgread: how fast can images be read from disk and decoded in Python, and which strategy
# should you use on your machine? `snakemake --cores 1` runs the full study of config.yaml.
#
# config -> dataset (files + manifest) -> verify (sha256, once) -> one trial job per grid cell
# and repetition (flush, check residency, time, one JSON record) -> aggregate (declared
# inputs) -> tables -> figures -> report


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/dataset.smk"
include: "workflow/rules/storage.smk"
include: "workflow/rules/trials.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"


report: REPORT_TEXT


# The hooks run commands (sinfo, the storage sweep, each kind's check): a real run's only,
# never a dry run's or a parse's.
onstart:
    check_cluster()
    plan_run.storage_lifecycle(config, CONVERTED, "start")


onsuccess:
    plan_run.storage_lifecycle(config, CONVERTED, "end")
    plan_run.print_recommendation()


onerror:
    plan_run.storage_lifecycle(config, CONVERTED, "end")
    plan_run.print_failures(PARSED_AT)


rule all:
    default_target: True
    input:
        TABLES,
        FIGURE_FILES,
    localrule: True
