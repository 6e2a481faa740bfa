"""Where every result lives under `results/<name>/`: the one map the rules, the report and the model kinds share.

A model is referenced by what it is, (target, arm): arm `base` is the untuned target (`models/<target>`), any other
arm the target fine-tuned on that arm's selection (`sft/<target>/<arm>`; GRAPE's round r is arm `grape.r<r>`). So
any model, tuned or not, can score (`scores/<target>/<scorer>.jsonl`, scorer = the arm of the scoring model), be
evaluated (`evaluate/<target>/<arm>/<benchmark>.json`), or, from another experiment, sample (model kind `tuned`).
Functions take plain names or Snakemake wildcards (`"{target}"`) alike and return paths relative to the results root.
"""

from __future__ import annotations

ROOT = "results"


def root(experiment_name: str) -> str:
    return f"{ROOT}/{experiment_name}"


def model(target: str, arm: str = "base") -> str:
    """The model folder of `target` untuned (arm `base`) or fine-tuned on `arm`'s selection."""
    return f"models/{target}" if arm == "base" else f"sft/{target}/{arm}"


def pool(which: str = "pool") -> str:
    """`pool`: every instruction with at least data.min_responses responses, verified; `all_available`: that pool and
    the instructions below the minimum with their dataset responses (read by arms declaring POOL = "all_available")."""
    return f"pool/{which}.jsonl"


def below_min() -> str:
    """The instructions with fewer than data.min_responses distinct responses (`grape.data.grouping.BELOW_MIN`)."""
    return "data/below_min.jsonl"


def candidates(source: str) -> str:
    return f"candidates/{source}.jsonl"


def scores(target: str, scorer: str = "base") -> str:
    """`target`'s scores of the pool, by the model `model(target, scorer)`."""
    return f"scores/{target}/{scorer}.jsonl"


def skipped(target: str, scorer: str = "base") -> str:
    return f"scores/{target}/{scorer}.skipped.jsonl"


def score_shard(target: str, scorer: str, shard: str, shards: int, what: str = "") -> str:
    return f"scores/{target}/{scorer}/shard{shard}-of-{shards}{what}.jsonl"


def rewards(model_name: str) -> str:
    return f"rewards/{model_name}.jsonl"


def selection(target: str, arm: str) -> str:
    return f"selections/{target}/{arm}.jsonl"


def evaluation(target: str, arm: str, benchmark: str) -> str:
    return f"evaluate/{target}/{arm}/{benchmark}.json"


def config() -> str:
    """The composed config the compose job writes (what every other job's params are cut from)."""
    return "config.yaml"


def prefetch_record() -> str:
    return "prefetch.json"


def split(name: str) -> str:
    """The data stage's `train`, `test` (held out) and `dropped` rows."""
    return f"data/{name}.jsonl"


def verify_counts(pool_name: str = "pool") -> str:
    """The correctness filter's counts per source of `pool(pool_name)`."""
    return "pool/verify_counts.json" if pool_name == "pool" else f"pool/{pool_name}_counts.json"


def local_task() -> str:
    """The lm-eval task YAML of the held-out split (the `local` benchmark)."""
    return "evaluate/lm_eval_task/task.yaml"


def report(file: str) -> str:
    """A file of the report (`results.csv`, `summary.html`, the figures)."""
    return f"report/{file}"
