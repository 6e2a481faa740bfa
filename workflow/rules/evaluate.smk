rule evaluate_task:
    input:
        test=f"{RESULTS}/data/test.jsonl",
    output:
        TASK_YAML,
    log:
        f"{RESULTS}/logs/evaluate/task.log",
    conda:
        ENV
    resources:
        **job_resources("compose"),
    params:
        cfg=slice_of("evaluate"),
    shell:
        "grape evaluate-task --params {params.cfg:q} --test {input.test:q} --output {output:q} > {log:q} 2>&1"


rule evaluate_base:
    input:
        model=f"{RESULTS}/models/{{target}}",
        task=TASK_YAML,
        test=f"{RESULTS}/data/test.jsonl",  # read through the task YAML's data_files
    output:
        f"{RESULTS}/evaluate/{{target}}/base.json",
    log:
        f"{RESULTS}/logs/evaluate/{{target}}/base.log",
    conda:
        ENV
    threads: THREADS
    resources:
        **job_resources("evaluate", "target"),
    params:
        cfg=slice_of("evaluate"),
    shell:
        "grape evaluate --params {params.cfg:q} --threads {threads} --model {input.model:q} "
        "--task {input.task:q} --output {output:q} > {log:q} 2>&1"


rule evaluate:
    input:
        model=f"{RESULTS}/sft/{{target}}/{{arm}}",
        task=TASK_YAML,
        test=f"{RESULTS}/data/test.jsonl",  # read through the task YAML's data_files
    output:
        f"{RESULTS}/evaluate/{{target}}/{{arm}}.json",
    log:
        f"{RESULTS}/logs/evaluate/{{target}}/{{arm}}.log",
    conda:
        ENV
    threads: THREADS
    resources:
        **job_resources("evaluate", "target"),
    params:
        cfg=slice_of("evaluate"),
    shell:
        "grape evaluate --params {params.cfg:q} --threads {threads} --model {input.model:q} "
        "--task {input.task:q} --output {output:q} > {log:q} 2>&1"
