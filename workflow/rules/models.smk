rule model:
    input:
        model_inputs,
    output:
        directory(at(layout.model("{model}"))),
    log:
        f"{RESULTS}/logs/model/{{model}}.log",
    conda:
        ENV
    threads: THREADS
    resources:
        **job_resources("model"),
    params:
        cfg=slice_of("model"),
    shell:
        "grape model --params {params.cfg:q} --threads {threads} --output {output:q} > {log:q} 2>&1"
