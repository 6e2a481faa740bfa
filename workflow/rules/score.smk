rule score:
    input:
        model=f"{R}/models/{{target}}",
        pool=f"{R}/pool/pool.jsonl",
    output:
        f"{R}/scores/{{target}}.jsonl",
    params:
        p=params_for("score"),
    log:
        f"{R}/logs/score/{{target}}.log",
    threads: THREADS
    resources:
        **model_resources(),
    conda:
        ENV
    shell:
        "grape score --config {CONFIG} --threads {threads} --target {wildcards.target} "
        "--model {input.model} --pool {input.pool} --output {output} > {log} 2>&1"
