rule report:
    input:
        evals=expand(
            at(layout.evaluation("{target}", "{arm}", "{benchmark}")),
            target=CFG["targets"],
            arm=["base", *ARM_LIST],
            benchmark=BENCHMARKS,
        ),
        trained=expand(at(layout.model("{target}", "{arm}")), target=CFG["targets"], arm=ARM_LIST),
        selections=expand(
            at(layout.selection("{target}", "{arm}")), target=CFG["targets"], arm=ARM_LIST
        ),
        scores=expand(at(layout.scores("{target}")), target=CFG["targets"]),
        counts=at(layout.verify_counts()),
        candidates=expand(at(layout.candidates("{source}")), source=CFG["sources"]),
    output:
        table=report(
            at(layout.report("results.csv")), caption="../report/results.rst", category="Results"
        ),
        accuracy=report(
            at(layout.report("accuracy.svg")), caption="../report/accuracy.rst", category="Results"
        ),
        paired=report(
            at(layout.report("paired.csv")), caption="../report/paired.rst", category="Results"
        ),
        paired_fig=report(
            at(layout.report("paired.svg")), caption="../report/paired.rst", category="Results"
        ),
        outcome=report(
            at(layout.report("outcome.txt")), caption="../report/outcome.rst", category="Results"
        ),
        loss=report(
            at(layout.report("loss.svg")), caption="../report/loss.rst", category="Training"
        ),
        costs=report(at(layout.report("costs.csv")), caption="../report/costs.rst", category="Cost"),
        loss_table=report(
            at(layout.report("loss.csv")), caption="../report/loss.rst", category="Training"
        ),
        fit=report(
            at(layout.report("selected_vs_not.csv")),
            caption="../report/score_dist.rst",
            category="Scoring",
        ),
        shares=report(
            at(layout.report("source_share.svg")),
            caption="../report/source_share.rst",
            category="Selection",
        ),
        share_table=report(
            at(layout.report("selection_sources.csv")),
            caption="../report/source_share.rst",
            category="Selection",
        ),
        scores=report(
            at(layout.report("score_dist.svg")),
            caption="../report/score_dist.rst",
            category="Scoring",
        ),
        verify=report(
            at(layout.report("verify_counts.csv")),
            caption="../report/verify_counts.rst",
            category="Filtering",
        ),
        summary=at(layout.report("summary.html")),
    log:
        f"{RESULTS}/logs/report.log",
    conda:
        ENV
    resources:
        **job_resources("report"),
    params:
        cfg=slice_of("report"),
        outdir=lambda wc, output: os.path.dirname(output.table),
    shell:
        "grape report --params {params.cfg:q} --evals {input.evals:q} --trained {input.trained:q} "
        "--selections {input.selections:q} --scores {input.scores:q} --verify-counts {input.counts:q} "
        "--output-dir {params.outdir:q} --candidates {input.candidates:q} --cluster-logs .snakemake/slurm_logs > {log:q} 2>&1"
