"""The study's plan: what a config asks for, checked, and what each cell of it needs.

``grid`` expands a config to its trial cells; ``schema`` and ``checks`` refuse a bad config in
one line; ``inputs`` says what each cell reads (references, decoded caches, shards, the cache
policy, its job group); ``storage`` checks at a run's start which storage profiles this
machine can emulate (never while the Snakefile is parsed); ``run`` holds what a run says at
its end (the answer, the failed jobs' logs) and the report guard; ``scheduler_patch`` is the
one change the workflow makes to Snakemake's scheduler. The workflow (workflow/rules) only
wires these to rules.
"""
