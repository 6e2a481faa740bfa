rule data:
    input:
        user=user_data,
    output:
        train=f"{RESULTS}/data/train.jsonl",
        test=f"{RESULTS}/data/test.jsonl",
    log:
        f"{RESULTS}/logs/data.log",
    conda:
        ENV
    params:
        cfg=slice_of("data"),
    shell:
        "grape data --params {params.cfg:q} --train {output.train} --test {output.test} > {log} 2>&1"
