"""sft_full: every response of the original dataset(s) (`select.original_sources`), single-response instructions
included: Table 2's "Tulu3-SFT" (every instance of the SFT mixture as released, 939K in the paper)."""

from grape.arms import Choice, originals

NAME = "sft_full"
SCORES = False
READS = ("original_sources", "exclude_self")
POOL = "all_available"  # the pool and the instructions below data.min_responses (`grape.layout.pool`)
OPTIONS: dict = {}


def choose(c: Choice) -> list[dict]:
    # paper 5.2, Table 2: "Tulu3-SFT": the full SFT mixture, including the instructions with only one response,
    # which the >= 2-response pool (and so every other arm) leaves out
    return [x for x in c.cands if x["source"] in originals(c)]
