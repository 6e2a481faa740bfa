rule report:
    input:
        evals=expand(f"{R}/eval/{{target}}/{{arm}}.json", target=CFG["targets"], arm=["base", *ARM_LIST]),
        trained=expand(f"{R}/sft/{{target}}/{{arm}}", target=CFG["targets"], arm=ARM_LIST),
        selections=expand(f"{R}/selections/{{target}}/{{arm}}.jsonl", target=CFG["targets"], arm=ARM_LIST),
        scores=expand(f"{R}/scores/{{target}}.jsonl", target=CFG["targets"]),
        counts=f"{R}/pool/verify_counts.json",
    output:
        table=report(f"{R}/report/results.csv", caption="../report/results.rst", category="Results"),
        accuracy=report(f"{R}/report/accuracy.svg", caption="../report/accuracy.rst", category="Results"),
        shares=report(
            f"{R}/report/source_share.svg", caption="../report/source_share.rst", category="Selection"
        ),
        share_table=report(
            f"{R}/report/selection_sources.csv", caption="../report/source_share.rst", category="Selection"
        ),
        scores=report(f"{R}/report/score_dist.svg", caption="../report/score_dist.rst", category="Scoring"),
        verify=report(
            f"{R}/report/verify_counts.csv", caption="../report/verify_counts.rst", category="Filtering"
        ),
        summary=f"{R}/report/summary.html",
    params:
        p=params_for("report"),
    log:
        f"{R}/logs/report.log",
    conda:
        ENV
    shell:
        "grape report --config {CONFIG} --results-dir {R} --output-dir {R}/report > {log} 2>&1"
