"""all: every candidate in the pool (the paper's "more data" comparison)."""

from grape.arms import Choice

NAME = "all"
SCORES = False
READS = ("exclude_self",)
OPTIONS: dict = {}


def choose(c: Choice) -> list[dict]:
    return c.cands
