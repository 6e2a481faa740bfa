# The reward arm's scores (the paper's App. B.1): a reward model (select.reward_model) scores every pool candidate.
rule reward:
    input:
        model=at(layout.model("{model}")),
        pool=at(layout.pool()),
    output:
        at(layout.rewards("{model}")),
    log:
        f"{RESULTS}/logs/reward/{{model}}.log",
    conda:
        ENV
    threads: THREADS
    resources:
        **job_resources("score", "model"),
    params:
        cfg=slice_of("reward"),
    shell:
        "grape reward --params {params.cfg:q} --threads {threads} --model {input.model:q} --pool {input.pool:q} "
        "--output {output:q} > {log:q} 2>&1"
