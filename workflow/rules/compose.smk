rule compose:
    output:
        f"{RESULTS}/config.yaml",
    log:
        f"{RESULTS}/logs/compose.log",
    conda:
        ENV
    resources:
        **job_resources("compose"),
    params:
        cfg=slice_of("compose"),
    shell:
        "grape compose --params {params.cfg:q} --output {output:q} > {log:q} 2>&1"
