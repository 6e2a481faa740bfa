"""grape: per instruction, the k candidates the target finds most likely (highest mean log-prob): the paper's GRAPE."""

from grape.arms import Choice, ranked

NAME = "grape"
SCORES = True
READS = ("k", "original_sources", "exclude_self")
OPTIONS: dict = {}


def choose(c: Choice) -> list[dict]:
    return ranked(c, -1.0)
