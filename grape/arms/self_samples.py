"""self: grape among the target's own samples only (self-distillation, the paper's Table 4)."""

from grape.arms import Choice, ranked

NAME = "self"
SCORES = True
READS = ("k", "original_sources")
OPTIONS: dict = {}
ONLY_OWN = True


def choose(c: Choice) -> list[dict]:
    return ranked(c, -1.0)
