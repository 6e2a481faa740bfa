rule verify:
    input:
        train=f"{R}/data/train.jsonl",
        candidates=expand(f"{R}/candidates/{{source}}.jsonl", source=CFG["sources"]),
    output:
        pool=f"{R}/pool/pool.jsonl",
        counts=f"{R}/pool/verify_counts.json",
    params:
        p=params_for("verify"),
    log:
        f"{R}/logs/verify.log",
    conda:
        ENV
    shell:
        "grape verify --config {CONFIG} --train {input.train} --candidates {input.candidates} "
        "--output {output.pool} --counts {output.counts} > {log} 2>&1"
