rule sft:
    input:
        model=f"{RESULTS}/models/{{target}}",
        selection=f"{RESULTS}/selections/{{target}}/{{arm}}.jsonl",
    output:
        directory(f"{RESULTS}/sft/{{target}}/{{arm}}"),
    log:
        f"{RESULTS}/logs/sft/{{target}}/{{arm}}.log",
    conda:
        ENV
    threads: THREADS
    resources:
        **job_resources("sft", "target"),
        run_options=run_options("sft"),
    params:
        cfg=slice_of("sft"),
        launch=sft_launcher,
    shell:
        "{params.launch:q} sft --params {params.cfg:q} --run-options {resources.run_options:q} --threads {threads} "
        "--model {input.model:q} --selection {input.selection:q} --output {output:q} > {log:q} 2>&1"
