"""strongest: only the strongest source's responses, as many per instruction as the original has (fewer where it
has fewer; the shortfall is counted): the paper's "Strongest-Model Responses" (405B only)."""

from grape.arms import Choice, originals

NAME = "strongest"
SCORES = False
READS = ("strongest_source", "original_sources", "exclude_self")
OPTIONS: dict = {}


def choose(c: Choice) -> list[dict]:
    # paper 4.1: "uses only responses from LLAMA3.1-405B-INSTRUCT", as many per instruction as the original data
    want = sum(x["source"] in originals(c) for x in c.cands)
    mine = [x for x in c.cands if x["source"] == c.settings["strongest_source"]][:want]  # cands sorted by id
    if len(mine) < want:
        c.counts["strongest_shortfall"] += want - len(mine)
        c.counts["instructions_short_of_strongest"] += 1
    return mine
