rule sft:
    input:
        model=f"{R}/models/{{target}}",
        selection=f"{R}/selections/{{target}}/{{arm}}.jsonl",
    output:
        directory(f"{R}/sft/{{target}}/{{arm}}"),
    params:
        p=params_for("sft"),
    log:
        f"{R}/logs/sft/{{target}}/{{arm}}.log",
    threads: THREADS
    resources:
        **model_resources(),
    conda:
        ENV
    shell:
        "grape sft --config {CONFIG} --threads {threads} --target {wildcards.target} --arm {wildcards.arm} "
        "--model {input.model} --selection {input.selection} --output {output} > {log} 2>&1"
