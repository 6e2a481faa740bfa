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
