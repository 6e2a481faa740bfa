rule data:
    input:
        user=user_data,
    output:
        train=at(layout.split("train")),
        test=at(layout.split("test")),
        dropped=at(layout.split("dropped")),
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


# The instructions the pool leaves out (fewer than data.min_responses responses), for the arms trained on every pair
# (sft_full, all_available): the same import, its other half; run only when such an arm is asked for.
rule below_min:
    input:
        user=user_data,
    output:
        at(layout.below_min()),
    log:
        f"{RESULTS}/logs/below_min.log",
    conda:
        ENV
    threads: CPU_JOB_THREADS
    resources:
        **job_resources("data"),
    params:
        cfg=slice_of("data"),
    shell:
        "grape data --params {params.cfg:q} --threads {threads} --below-min --train {output:q} > {log:q} 2>&1"
