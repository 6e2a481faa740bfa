rule evaluate_task:
    input:
        test=at(layout.split("test")),
    output:
        TASK_YAML,
    log:
        f"{RESULTS}/logs/evaluate/task.log",
    conda:
        ENV
    resources:
        **job_resources("compose"),
    params:
        cfg=slice_of("evaluate_task"),
    shell:
        "grape evaluate-task --params {params.cfg:q} --test {input.test:q} --output {output:q} > {log:q} 2>&1"


# One job per (model, benchmark): a benchmark added, changed or failing touches only its own jobs. The model is the
# untuned target (arm `base`) or its fine-tune on an arm's selection.
rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        at(layout.evaluation("{target}", "{arm}", "{benchmark}")),
    log:
        f"{RESULTS}/logs/evaluate/{{target}}/{{arm}}/{{benchmark}}.log",
    conda:
        ENV
    threads: THREADS
    resources:
        **job_resources("evaluate", "target"),
    params:
        cfg=slice_of("evaluate"),
        task=lambda wc, input: ["--task", input.task] if "task" in input.keys() else [],
    shell:
        "grape evaluate --params {params.cfg:q} --threads {threads} --model {input.model:q} "
        "{params.task:q} --output {output:q} > {log:q} 2>&1"
