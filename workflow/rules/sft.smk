rule sft:
    input:
        model=at(layout.model("{target}")),
        selection=at(layout.selection("{target}", "{arm}")),
    output:
        directory(at(layout.model("{target}", "{arm}"))),
    log:
        f"{RESULTS}/logs/sft/{{target}}/{{arm}}.log",
    conda:
        ENV
    threads: THREADS
    resources:
        **job_resources("sft", "target"),
        run_options=run_options("sft"),
        launch=sft_launcher,
    params:
        cfg=slice_of("sft"),
    shell:
        "{resources.launch} sft --params {params.cfg:q} --run-options {resources.run_options:q} --threads {threads} "
        "--model {input.model:q} --selection {input.selection:q} --output {output:q} > {log:q} 2>&1"
