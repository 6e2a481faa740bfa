"""reward: per instruction, the k candidates a reward model scores highest (`select.reward_model`; the paper's
App. B.1, Skywork-Reward-Llama-3.1-8B-v0.2, against GRAPE's likelihood under the target)."""

from grape.arms import Choice, ranked

NAME = "reward"
SCORES = False
RANKS_BY = "rewards"  # rewards/<select.reward_model>.jsonl, not the target's log-probs
READS = ("k", "original_sources", "exclude_self", "reward_model")
OPTIONS: dict = {}


def choose(c: Choice) -> list[dict]:
    return ranked(c, -1.0)  # the highest reward first (ties by candidate_id)
