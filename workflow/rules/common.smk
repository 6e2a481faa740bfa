# Compose the experiment config with Hydra (config/), validate it against workflow/schemas/, and define
# the helpers the rules share. Parsing has no side effects: nothing is written, the environment is left
# alone, and only light modules of grape are imported (no stage module). Each job gets its config slice as JSON
# through `params:` plus its declared inputs and outputs, nothing else.
import json
import os
import shlex

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

try:
    from grape import arms as garms
    from grape.evaluate import bench_data
    from grape import config as gconfig
    from grape import layout
    from grape import resources as gresources
    from grape.evaluate import sandbox as gsandbox
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

RESULTS = layout.root(CFG["name"])

# Model-written code runs only in the sandbox (grape/evaluate/sandbox.py): say so here, on the login node, not after a day of
# SFT, when this node lacks it (what the evaluate job would refuse on; compute nodes may differ).
_code = gsandbox.code_benchmarks(CFG["evaluate"])
_why = (
    _code and CFG["evaluate"]["sandbox"] == "bwrap" and gsandbox.unavailable("bwrap", probe=False)
)
if _why:
    logger.warning(f"{', '.join(_code)}: {gsandbox.refusal(_why)}")


def at(path):
    """A path of grape.layout (the one map of results/<name>/ the rules, report and model kinds share) under RESULTS."""
    return f"{RESULTS}/{path}"


ENV = "../../envs/grape.yaml"
THREADS = CFG["threads"]
ARM_LIST = gconfig.trained_arms(CFG)  # select.arms, then GRAPE's later rounds (grape.r2, ...)
SHARD_COUNT = CFG["score"]["shards"]
TASK_YAML = at(layout.local_task())
BENCHMARKS = list(CFG["evaluate"]["tasks"])


wildcard_constraints:
    model=r"[A-Za-z0-9_.-]+",
    source=r"[A-Za-z0-9_.-]+",
    target=r"[A-Za-z0-9_.-]+",
    shard=r"\d+",
    arm="|".join(["base", *ARM_LIST]),
    scorer="|".join(["base", *ARM_LIST]),
    benchmark="|".join(BENCHMARKS),


def slice_of(stage):
    """What determines a stage's output, as JSON for the job's params: a change reruns exactly that stage."""
    return lambda wc: gconfig.params_json(CFG, stage, **dict(wc.items()))


def run_options(stage):
    """The slice's operational values (threads, retries, ...), as JSON for the job's resources: no rerun trigger."""
    return lambda wc: gconfig.run_options_json(CFG, stage, **dict(wc.items()))


CPU_JOB_THREADS = CFG["resources"]["cpu_job"]["cpus"]
if CFG.get("cache_dir"):  # every job reads models and datasets from the prefetched cache
    # a config value is data, never shell code: quoted for the shell, whatever it holds
    shell.prefix(f"export HF_HOME={shlex.quote(os.path.abspath(CFG['cache_dir']))}; ")


def job_resources(stage, wildcard=None):
    """A rule's resources (grape/resources.py): fixed for model-free stages, per model (the `wildcard`'s value)
    for model stages, so an 8B fine-tune and a 405B sampler each ask for what they need."""
    if wildcard is None:
        return gresources.rule_resources(CFG, stage)
    names = CFG["sources"] if stage == "sample" else CFG["targets"]
    keys = gresources.rule_resources(CFG, stage, names[0]) if names else {}
    return {
        k: (lambda wc, k=k: gresources.rule_resources(CFG, stage, wc[wildcard])[k]) for k in keys
    }


VLLM_ENV = "../../envs/vllm.yaml"


def uses_vllm(stage):
    return CFG[stage]["backend"] == "vllm"


def grape_command(stage):
    """`grape`, or the vLLM venv's `grape` when the stage's backend is vllm (vLLM pins its own torch/transformers).
    A resource, not a param: where the checkout or the venv lies does not change the output, so moving them reruns
    nothing. A venv without `bin/grape` is named here (the job itself would only say "No such file").
    """
    if not uses_vllm(stage) or not CFG.get("vllm_env"):
        return "grape"
    env = CFG["vllm_env"] if os.path.isabs(CFG["vllm_env"]) else os.path.join(BASE, CFG["vllm_env"])
    exe = os.path.join(env, "bin", "grape")
    if not os.path.exists(exe):
        logger.warning(
            f"{stage}.backend is vllm but vllm_env {CFG['vllm_env']!r} has no bin/grape ({exe}): its jobs will fail; "
            "run `make vllm-env`, or set vllm_env (null: the conda env envs/vllm.yaml with --use-conda)"
        )
    return exe


def sft_launcher(wc):
    """`grape` for one process; `accelerate launch` with the job's GPU count (config/accelerate/) for several.
    One shell-quoted string (shlex.join: a path with spaces stays one word), a resource like grape_command's: the
    checkout's path is not a rerun trigger, nor the process count (the same global batch on any number of them:
    tests/test_sft.py); the strategy is (sft.accelerate, in sft's slice)."""
    gpus = gresources.for_job(CFG, "sft", wc.target).get("gpu", 0)
    if gpus <= 1:
        return "grape"
    strategy = CFG["sft"].get("accelerate") or "ddp"
    config = os.path.join(BASE, "config", "accelerate", f"{strategy}.yaml")
    return shlex.join(
        [
            "accelerate",
            "launch",
            "--config_file",
            config,
            "--num_processes",
            str(gpus),
            "-m",
            "grape",
        ]
    )


def user_data(wc):
    """The local files of the pool (not hub ids), so editing them reruns the workflow."""
    d = CFG["data"]
    paths = [d.get("train_path"), d.get("test_path"), d.get("path")]
    paths += [ds["path"] for ds in d.get("datasets") or []]
    return [p for p in paths if p and os.path.exists(p)]


def model_dir(target, arm):
    """A model by what it is: the untuned target (arm `base`), or the target fine-tuned on an arm's selection."""
    return at(layout.model(target, arm))


def model_inputs(wc):
    """What a model job builds from: nothing, except another experiment's fine-tune (kind `tuned`), whose folder it
    records by content (so a retrained model upstream reruns this one and everything that used it).
    """
    m = CFG["models"][wc.model]
    if m["kind"] != "tuned":
        return []
    return [os.path.join(layout.root(m["experiment_name"]), layout.model(m["target"], m["arm"]))]


def scorer_model(wc):
    """The model whose log-probs a score job computes: the untuned target, or a round's GRAPE model."""
    return model_dir(wc.target, wc.scorer)


def select_pool(wc):
    """The pool an arm chooses from: the verified pool, or the pool of every pair for arms declaring
    POOL = "all_available" (sft_full, all_available), so the other arms never wait for the second import.
    """
    return at(layout.pool(getattr(garms.get(wc.arm), "POOL", "pool")))


def select_scores(wc):
    """Only arms declared SCORES read scores (rescoring does not retrain the others); round r of GRAPE reads the
    scores of round r-1's GRAPE model (grape.arms.scorer_of); the reward arm a reward model's."""
    ranks_by = garms.ranks_by(wc.arm)
    if ranks_by == "rewards":  # a reward model's scores (the reward arm)
        return [at(layout.rewards(CFG["select"]["reward_model"]))]
    if ranks_by != "scores":
        return []
    return [at(layout.scores(wc.target, garms.scorer_of(wc.arm)))]


def evaluate_inputs(wc):
    """The model (the untuned target for arm `base`, else its fine-tune) and every file its benchmark reads: for the
    local benchmark its task YAML and the held-out split (the other benchmarks never wait for, or rerun on, the local
    task); for the others each local file (data_files, package_file, a prefetched download, AlpacaEval's reference
    and glm_data: grape.evaluate.bench_data.files_read), so editing one reruns exactly the jobs that read it.
    """
    model = model_dir(wc.target, wc.arm)
    if wc.benchmark == "local":
        return {"model": model, "task": TASK_YAML, "test": at(layout.split("test"))}
    b = CFG["evaluate"]["benchmarks"][wc.benchmark]
    return {"model": model, "files": bench_data.files_read(wc.benchmark, b, CFG.get("cache_dir"))}


def scores_flag(wc, input):
    """`--scores <file>` as words, each quoted in the shell command; none for arms that read no scores."""
    return ["--scores", str(input.scores)] if input.scores else []


def all_outputs():
    return [
        at(layout.config()),
        at(layout.report("results.csv")),
        at(layout.report("summary.html")),
    ]
