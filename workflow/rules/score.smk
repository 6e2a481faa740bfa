# The pool scored by one model of a target: the untuned target (scorer `base`), or a GRAPE round's fine-tune.
rule score_shard:
    input:
        model=scorer_model,
        pool=at(layout.pool()),
    output:
        scores=temp(at(layout.score_shard("{target}", "{scorer}", "{shard}", SHARD_COUNT))),
        skipped=temp(
            at(layout.score_shard("{target}", "{scorer}", "{shard}", SHARD_COUNT, ".skipped"))
        ),
    log:
        f"{RESULTS}/logs/score/{{target}}/{{scorer}}/shard{{shard}}-of-{SHARD_COUNT}.log",
    conda:
        VLLM_ENV if uses_vllm("score") else ENV
    threads: THREADS
    resources:
        **job_resources("score", "target"),
        grape=grape_command("score"),
    params:
        cfg=slice_of("score"),
        shards=SHARD_COUNT,
    shell:
        "{resources.grape:q} score --params {params.cfg:q} --threads {threads} "
        "--shard {wildcards.shard:q} --shards {params.shards:q} --model {input.model:q} --pool {input.pool:q} "
        "--output {output.scores:q} --skipped {output.skipped:q} > {log:q} 2>&1"


rule score_gather:
    input:
        scores=expand(
            at(layout.score_shard("{{target}}", "{{scorer}}", "{shard}", SHARD_COUNT)),
            shard=range(SHARD_COUNT),
        ),
        skipped=expand(
            at(layout.score_shard("{{target}}", "{{scorer}}", "{shard}", SHARD_COUNT, ".skipped")),
            shard=range(SHARD_COUNT),
        ),
    output:
        scores=at(layout.scores("{target}", "{scorer}")),
        skipped=at(layout.skipped("{target}", "{scorer}")),
    log:
        f"{RESULTS}/logs/score/{{target}}/{{scorer}}/gather.log",
    conda:
        ENV
    resources:
        **job_resources("score_gather"),
    params:
        cfg=slice_of("score"),
    shell:
        "grape score-gather --params {params.cfg:q} --inputs {input.scores:q} "
        "--skipped-inputs {input.skipped:q} --output {output.scores:q} --skipped {output.skipped:q} > {log:q} 2>&1"
