rule sample:
    input:
        model=f"{R}/models/{{source}}",
        train=f"{R}/data/train.jsonl",
    output:
        f"{R}/candidates/{{source}}.jsonl",
    params:
        p=params_for("sample"),
    log:
        f"{R}/logs/sample/{{source}}.log",
    threads: THREADS
    resources:
        **model_resources(),
    conda:
        ENV
    shell:
        "grape sample --config {CONFIG} --threads {threads} --source {wildcards.source} "
        "--model {input.model} --train {input.train} --output {output} > {log} 2>&1"
