rule model:
    output:
        directory(f"{R}/models/{{model}}"),
    params:
        p=params_for("model"),
    log:
        f"{R}/logs/model/{{model}}.log",
    threads: THREADS
    resources:
        **model_resources(gpu_capable=False),
    conda:
        ENV
    shell:
        "grape model --config {CONFIG} --threads {threads} --name {wildcards.model} --output {output} > {log} 2>&1"
