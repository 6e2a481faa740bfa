"""random: per instruction, k candidates drawn uniformly, seeded per instruction (independent of file order)."""

from grape.arms import Choice, rng

NAME = "random"
SCORES = False
READS = ("k", "original_sources", "exclude_self")
OPTIONS: dict = {}


def choose(c: Choice) -> list[dict]:
    return rng(c.seed, c.iid).sample(c.cands, min(c.k, len(c.cands)))
