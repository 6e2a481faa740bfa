SHARDS = range(CFG["score"]["shards"])
N_SHARDS = CFG["score"]["shards"]


rule score_shard:
    input:
        model=f"{R}/models/{{target}}",
        pool=f"{R}/pool/pool.jsonl",
    output:
        scores=temp(f"{R}/scores/{{target}}/shard{{shard}}-of-{N_SHARDS}.jsonl"),
        skipped=temp(f"{R}/scores/{{target}}/shard{{shard}}-of-{N_SHARDS}.skipped.jsonl"),
    params:
        p=params_for("score"),
    log:
        f"{R}/logs/score/{{target}}/shard{{shard}}-of-{N_SHARDS}.log",
    threads: THREADS
    resources:
        **model_resources(),
    conda:
        ENV
    shell:
        "grape score --config {CONFIG} --threads {threads} --target {wildcards.target} "
        "--shard {wildcards.shard} --shards {N_SHARDS} --model {input.model} --pool {input.pool} "
        "--output {output.scores} --skipped {output.skipped} > {log} 2>&1"


rule score_gather:
    input:
        scores=expand(f"{R}/scores/{{{{target}}}}/shard{{shard}}-of-{N_SHARDS}.jsonl", shard=SHARDS),
        skipped=expand(f"{R}/scores/{{{{target}}}}/shard{{shard}}-of-{N_SHARDS}.skipped.jsonl", shard=SHARDS),
    output:
        scores=f"{R}/scores/{{target}}.jsonl",
        skipped=f"{R}/scores/{{target}}.skipped.jsonl",
    params:
        p=params_for("score"),
    log:
        f"{R}/logs/score/{{target}}/gather.log",
    conda:
        ENV
    shell:
        "grape score-gather --config {CONFIG} --target {wildcards.target} --inputs {input.scores} "
        "--skipped-inputs {input.skipped} --output {output.scores} --skipped {output.skipped} > {log} 2>&1"
