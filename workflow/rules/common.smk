# Compose the experiment config with Hydra (config/), validate it against workflow/schemas/, and define
# the helpers the rules share. Parsing has no side effects: nothing is written, the environment is left
# alone, and only grape.config is imported (no stage module). Each job gets its config slice as JSON
# through `params:` plus its declared inputs and outputs, nothing else.
import json
import os

from snakemake.exceptions import WorkflowError

try:
    from grape import config as gconfig
except ImportError as err:
    raise WorkflowError(
        f"the grape package is not importable ({err}): run `make install` (or `pip install -e .`) first"
    )

BASE = os.path.dirname(workflow.main_snakefile)
try:
    EXPERIMENT, OVERRIDES = gconfig.overrides_from_mapping(config)
    CFG = gconfig.compose(
        EXPERIMENT,
        OVERRIDES,
        config_dir=os.path.join(BASE, "config"),
        schema_path=os.path.join(BASE, "workflow", "schemas", "config.schema.yaml"),
    )
except gconfig.ConfigError as err:
    raise WorkflowError(str(err))

RESULTS = f"results/{CFG['name']}"
ENV = "../../envs/grape.yaml"
THREADS = CFG["threads"]
ARM_LIST = list(CFG["select"]["arms"])
SHARD_COUNT = CFG["score"]["shards"]
TASK_YAML = f"{RESULTS}/evaluate/lm_eval_task/task.yaml"


wildcard_constraints:
    model=r"[A-Za-z0-9_.-]+",
    source=r"[A-Za-z0-9_.-]+",
    target=r"[A-Za-z0-9_.-]+",
    shard=r"\d+",
    arm="|".join(ARM_LIST),


def slice_of(stage):
    """The config slice a stage reads, as JSON for the job: a change reruns exactly that stage."""
    return lambda wc: gconfig.params_json(CFG, stage, **dict(wc.items()))


def model_resources(gpu_capable=True):
    res = {"mem_mb": CFG["resources"]["mem_mb"], "runtime": CFG["resources"]["runtime"]}
    if gpu_capable and CFG["resources"]["gpu"] > 0:
        res["gpu"] = CFG["resources"]["gpu"]
    return res


def user_data(wc):
    """The local files of the pool (not hub ids), so editing them reruns the workflow."""
    d = CFG["data"]
    paths = [d.get("train_path"), d.get("test_path"), d.get("path")]
    paths += [ds["path"] for ds in d.get("datasets") or []]
    return [p for p in paths if p and os.path.exists(p)]


def select_scores(wc):
    """Only grape/reverse read the scores, so rescoring does not retrain the other arms."""
    return [f"{RESULTS}/scores/{wc.target}.jsonl"] if wc.arm in gconfig.SCORED_ARMS else []


def scores_flag(wc, input):
    return f"--scores {input.scores}" if input.scores else ""


def all_outputs():
    return [
        f"{RESULTS}/config.yaml",
        f"{RESULTS}/report/results.csv",
        f"{RESULTS}/report/summary.html",
    ]
