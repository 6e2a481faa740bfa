# Compose the experiment config with Hydra (config/), validate it against
# workflow/schemas/config.schema.yaml, and define the helpers the rules share.
import os
import sys

sys.path.insert(0, workflow.basedir)  # `grape` importable even without `pip install -e .`
# Jobs call the `grape` CLI installed beside this Snakemake (e.g. .venv/bin), activated or not;
# with --sdm conda the job's own environment comes first on PATH.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

from snakemake.exceptions import WorkflowError

from grape import config as gconfig
from grape import runtime
from grape.select import ARMS

runtime.set_offline()  # no hub access: models and data come from packages or the workflow itself

try:
    EXPERIMENT, OVERRIDES = gconfig.overrides_from_mapping(config)
    CFG = gconfig.compose(EXPERIMENT, OVERRIDES)
except gconfig.ConfigError as err:
    raise WorkflowError(str(err))

R = f"results/{CFG['name']}"
CONFIG = f"{R}/config.yaml"  # the composed config, rewritten only when it changes
gconfig.write_if_changed(CONFIG, CFG)

ENV = "../../envs/grape.yaml"
THREADS = CFG["threads"]
ARM_LIST = list(CFG["select"]["arms"])
SCORED_ARMS = ("grape", "reverse")  # the arms that read the target's scores


wildcard_constraints:
    model=r"[A-Za-z0-9_.-]+",
    source=r"[A-Za-z0-9_.-]+",
    target=r"[A-Za-z0-9_.-]+",
    shard=r"\d+",
    arm="|".join(ARMS),


def params_for(stage):
    """The config slice a stage reads, as the rule's params: a change reruns exactly that stage."""
    return lambda wc: gconfig.stage_params(CFG, stage, **dict(wc.items()))


def model_resources(gpu_capable=True):
    res = {"mem_mb": CFG["resources"]["mem_mb"], "runtime": CFG["resources"]["runtime"]}
    if gpu_capable and CFG["resources"]["gpu"] > 0:
        res["gpu"] = CFG["resources"]["gpu"]
    return res


def all_outputs():
    return [
        f"{R}/report/results.csv",
        f"{R}/report/summary.html",
    ]
