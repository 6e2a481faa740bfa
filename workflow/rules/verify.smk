rule verify:
    input:
        train=f"{RESULTS}/data/train.jsonl",
        candidates=expand(at(layout.candidates("{source}")), source=CFG["sources"]),
    output:
        pool=f"{RESULTS}/pool/pool.jsonl",
        counts=f"{RESULTS}/pool/verify_counts.json",
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
