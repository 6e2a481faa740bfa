rule sample:
    input:
        model=f"{RESULTS}/models/{{source}}",
        train=f"{RESULTS}/data/train.jsonl",
    output:
        candidates=f"{RESULTS}/candidates/{{source}}.jsonl",
        missing=f"{RESULTS}/candidates/missing/{{source}}.jsonl",
    log:
        f"{RESULTS}/logs/sample/{{source}}.log",
    conda:
        VLLM_ENV if uses_vllm("sample") else ENV
    threads: THREADS
    resources:
        **job_resources("sample", "source"),
    params:
        cfg=slice_of("sample"),
        grape=grape_command("sample"),
    shell:
        "{params.grape} sample --params {params.cfg:q} --threads {threads} "
        "--model {input.model} --train {input.train} --output {output.candidates} --missing {output.missing} > {log} 2>&1"
