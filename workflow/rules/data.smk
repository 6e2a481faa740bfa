rule data:
    input:
        user=lambda wc: [CFG["data"]["train_path"], CFG["data"]["test_path"]]
        if CFG["data"]["kind"] == "jsonl"
        else [],
    output:
        train=f"{R}/data/train.jsonl",
        test=f"{R}/data/test.jsonl",
    params:
        p=params_for("data"),
    log:
        f"{R}/logs/data.log",
    conda:
        ENV
    shell:
        "grape data --config {CONFIG} --train {output.train} --test {output.test} > {log} 2>&1"
