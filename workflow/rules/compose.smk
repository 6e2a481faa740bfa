rule compose:
    output:
        at(layout.config()),
    log:
        f"{RESULTS}/logs/compose.log",
    conda:
        ENV
    resources:
        **job_resources("compose"),
        run_options=run_options("compose"),
    params:
        cfg=slice_of("compose"),
    shell:
        "grape compose --params {params.cfg:q} --run-options {resources.run_options:q} --output {output:q} > {log:q} 2>&1"
