# Whether this machine can emulate a storage profile (root, nginx, a cgroup: the kind's own
# check, which runs commands), asked once per profile by a job of a real run, never while
# the Snakefile is parsed: a dry run plans every trial a run makes. A trial on a profile that
# cannot be emulated here records a skip, and the answer says "not measured" (imgread.plan
# .storage). A changed user or IMGREAD_* setting asks again (machine: as a param).
rule storage_check:
    output:
        STORAGE_CHECK_OF,
    log:
        "results/logs/storage/{profile}.log",
    localrule: True
    conda:
        "../../envs/imgread.yaml"
    params:
        profile=lambda w: storage_of(config, w.profile),
        machine=plan_storage.machine_key(),
    script:
        "../scripts/storage_check.py"
