rule sample:
    input:
        model=at(layout.model("{source}")),
        train=at(layout.split("train")),
    output:
        candidates=at(layout.candidates("{source}")),
    log:
        main=f"{RESULTS}/logs/sample/{{source}}.log",
        # requests that failed after retries, with their reasons: a log, so a failed job keeps it
        missing=f"{RESULTS}/logs/sample/{{source}}.missing.jsonl",
    conda:
        VLLM_ENV if uses_vllm("sample") else ENV
    threads: THREADS
    resources:
        **job_resources("sample", "source"),
        run_options=run_options("sample"),
        grape=grape_command("sample"),
    params:
        cfg=slice_of("sample"),
    shell:
        "{resources.grape:q} sample --params {params.cfg:q} --run-options {resources.run_options:q} --threads {threads} --model {input.model:q} "
        "--train {input.train:q} --output {output.candidates:q} --missing {log.missing:q} > {log.main:q} 2>&1"
