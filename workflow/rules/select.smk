rule select:
    input:
        pool=select_pool,
        scores=select_scores,
    output:
        at(layout.selection("{target}", "{arm}")),
    log:
        f"{RESULTS}/logs/select/{{target}}/{{arm}}.log",
    conda:
        ENV
    threads: CPU_JOB_THREADS
    resources:
        **job_resources("select"),
    params:
        cfg=slice_of("select"),
        scores=scores_flag,
    shell:
        "grape select --params {params.cfg:q} --threads {threads} --pool {input.pool:q} {params.scores:q} --output {output:q} > {log:q} 2>&1"
