"""strongest: every candidate of one source (`select.strongest_source`, the paper's 405B-only distillation); an
instruction where it has none keeps its original responses (counted as fallback_to_original)."""

from grape.arms import Choice, originals

NAME = "strongest"
SCORES = False
READS = ("strongest_source", "original_sources", "exclude_self")
OPTIONS: dict = {}


def choose(c: Choice) -> list[dict]:
    mine = [x for x in c.cands if x["source"] == c.settings["strongest_source"]]
    if not mine:
        c.counts["fallback_to_original"] += 1
        mine = [x for x in c.cands if x["source"] in originals(c)]
    return mine
