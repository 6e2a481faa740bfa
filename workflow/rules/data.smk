rule data:
    input:
        user=user_data,
    output:
        train=f"{RESULTS}/data/train.jsonl",
        test=f"{RESULTS}/data/test.jsonl",
        dropped=f"{RESULTS}/data/dropped.jsonl",
    log:
        f"{RESULTS}/logs/data.log",
    conda:
        ENV
    threads: CPU_JOB_THREADS
    resources:
        **job_resources("data"),
    params:
        cfg=slice_of("data"),
    shell:
        "grape data --params {params.cfg:q} --threads {threads} --train {output.train:q} --test {output.test:q} "
        "--dropped {output.dropped:q} > {log:q} 2>&1"
