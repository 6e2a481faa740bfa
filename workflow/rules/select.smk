def select_scores(wc):
    # Only grape/reverse read the scores, so rescoring does not retrain the other arms.
    return [f"{R}/scores/{wc.target}.jsonl"] if wc.arm in SCORED_ARMS else []


rule select:
    input:
        pool=f"{R}/pool/pool.jsonl",
        scores=select_scores,
    output:
        f"{R}/selections/{{target}}/{{arm}}.jsonl",
    params:
        p=params_for("select"),
        scores=lambda wc, input: f"--scores {input.scores}" if input.scores else "",
    log:
        f"{R}/logs/select/{{target}}/{{arm}}.log",
    conda:
        ENV
    shell:
        "grape select --config {CONFIG} --target {wildcards.target} --arm {wildcards.arm} "
        "--pool {input.pool} {params.scores} --output {output} > {log} 2>&1"
