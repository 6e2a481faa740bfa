"""3x: three times as many responses per instruction as the original has, drawn (seeded per instruction) from every
validated response of the pool; all of them where there are fewer (counted): the paper's "3 x Data"."""

from grape.arms import Choice, originals, rng

NAME = "3x"
SCORES = False
READS = ("original_sources", "exclude_self")
OPTIONS = {"properties": {"factor": {"type": "integer", "minimum": 1}}}  # 3 unless set


def choose(c: Choice) -> list[dict]:
    # paper 4.1, footnote 1: 3 validated responses per instruction in UltraInteract -> 9 for the 3 x Data baseline
    factor = (c.settings.get("options") or {}).get("factor") or 3
    want = factor * sum(x["source"] in originals(c) for x in c.cands)
    if len(c.cands) < want:
        c.counts["3x_shortfall"] += want - len(c.cands)
        c.counts["instructions_short_of_3x"] += 1
        return list(c.cands)
    return sorted(rng(c.seed, c.iid).sample(c.cands, want), key=lambda x: x["candidate_id"])
