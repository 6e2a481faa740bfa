from grape.evaluate import task_name

TASK_YAML = f"{R}/eval/task/{task_name(CFG['name'])}.yaml"


rule eval_task:
    input:
        test=f"{R}/data/test.jsonl",
    output:
        TASK_YAML,
    params:
        p=params_for("evaluate"),
    log:
        f"{R}/logs/eval_task.log",
    conda:
        ENV
    shell:
        "grape eval-task --config {CONFIG} --test {input.test} --output {output} > {log} 2>&1"


rule evaluate_base:
    input:
        model=f"{R}/models/{{target}}",
        task=TASK_YAML,
    output:
        f"{R}/eval/{{target}}/base.json",
    params:
        p=params_for("evaluate"),
    log:
        f"{R}/logs/evaluate/{{target}}/base.log",
    threads: THREADS
    resources:
        **model_resources(),
    conda:
        ENV
    shell:
        "grape evaluate --config {CONFIG} --threads {threads} --model {input.model} --task {input.task} "
        "--output {output} > {log} 2>&1"


rule evaluate:
    input:
        model=f"{R}/sft/{{target}}/{{arm}}",
        task=TASK_YAML,
    output:
        f"{R}/eval/{{target}}/{{arm}}.json",
    params:
        p=params_for("evaluate"),
    log:
        f"{R}/logs/evaluate/{{target}}/{{arm}}.log",
    threads: THREADS
    resources:
        **model_resources(),
    conda:
        ENV
    shell:
        "grape evaluate --config {CONFIG} --threads {threads} --model {input.model} --task {input.task} "
        "--output {output} > {log} 2>&1"
