"""all_available: every pair read, the instructions below data.min_responses included: Table 2's "All Available
Data" (1.58M in the paper; `all` is the >= 2-response pool, "All Responses", 1.03M)."""

from grape.arms import Choice

NAME = "all_available"
SCORES = False
READS = ("exclude_self",)
POOL = "all_available"  # the pool and the instructions below data.min_responses (`grape.layout.pool`)
OPTIONS: dict = {}


def choose(c: Choice) -> list[dict]:
    # paper 5.2, Table 2: "All Available Data": every (instruction, response) pair under consideration, before the
    # filter that keeps instructions with at least two distinct responses
    return list(c.cands)
