"""original: the dataset's own responses of `select.original_sources` (Tulu-3: the SFT mixture, "SFT-only")."""

from grape.arms import Choice, originals

NAME = "original"
SCORES = False
READS = ("original_sources", "exclude_self")
OPTIONS: dict = {}


def choose(c: Choice) -> list[dict]:
    return [x for x in c.cands if x["source"] in originals(c)]
