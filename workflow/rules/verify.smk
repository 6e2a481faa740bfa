rule verify:
    input:
        train=at(layout.split("train")),
        candidates=expand(at(layout.candidates("{source}")), source=CFG["sources"]),
    output:
        pool=at(layout.pool()),
        counts=at(layout.verify_counts()),
    log:
        f"{RESULTS}/logs/verify.log",
    conda:
        ENV
    threads: CPU_JOB_THREADS
    resources:
        **job_resources("verify"),
    params:
        cfg=slice_of("verify"),
    shell:
        "grape verify --params {params.cfg:q} --threads {threads} --train {input.train:q} --candidates {input.candidates:q} "
        "--output {output.pool:q} --counts {output.counts:q} > {log:q} 2>&1"


# The pool of every pair: the verified pool, then the dataset responses of the instructions below the minimum.
rule pool_all_available:
    input:
        pool=at(layout.pool()),
        below=at(layout.below_min()),
    output:
        pool=at(layout.pool("all_available")),
        counts=at(layout.verify_counts("all_available")),
    log:
        f"{RESULTS}/logs/pool_all_available.log",
    conda:
        ENV
    threads: CPU_JOB_THREADS
    resources:
        **job_resources("verify"),
    params:
        cfg=slice_of("verify"),
    shell:
        "grape verify --params {params.cfg:q} --threads {threads} --train {input.below:q} --extend {input.pool:q} "
        "--output {output.pool:q} --counts {output.counts:q} > {log:q} 2>&1"
