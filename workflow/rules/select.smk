rule select:
    input:
        pool=f"{RESULTS}/pool/pool.jsonl",
        scores=select_scores,
    output:
        f"{RESULTS}/selections/{{target}}/{{arm}}.jsonl",
    log:
        f"{RESULTS}/logs/select/{{target}}/{{arm}}.log",
    conda:
        ENV
    params:
        cfg=slice_of("select"),
        scores=scores_flag,
    shell:
        "grape select --params {params.cfg:q} --pool {input.pool} {params.scores} --output {output} > {log} 2>&1"
