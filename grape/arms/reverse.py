"""reverse: per instruction, the k candidates the target finds least likely: the paper's "Highest" (perplexity)."""

from grape.arms import Choice, ranked

NAME = "reverse"
SCORES = True
READS = ("k", "original_sources", "exclude_self")
OPTIONS: dict = {}


def choose(c: Choice) -> list[dict]:
    return ranked(c, 1.0)
