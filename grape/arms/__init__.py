"""Selection arms as plugins: one module per arm, found by name, describing itself.

An arm is a module with
- `NAME`: the name `select.arms` lists;
- `SCORES`: True when it ranks by the target's scores (the workflow then hands it `scores/<target>/base.jsonl`, and
  rescoring reruns it; the other arms never wait for scoring); `RANKS_BY = "rewards"` instead: by a reward model's
  scores (`rewards/<select.reward_model>.jsonl`);
- `READS`: the `select.*` settings it reads (`k`, `original_sources`, `strongest_source`, `exclude_self`): its job's
  params hold exactly these, so adding an arm, or changing another arm's setting, reruns nothing of this one;
- `OPTIONS`: a JSON schema for its own settings under `select.options.<NAME>` (checked with the config);
- `ONLY_OWN`: True when it chooses among the target's own samples only (the others never do under `exclude_self`);
- `POOL = "all_available"`: it chooses from the pool of every pair (the instructions below `data.min_responses`
  too: `grape.layout.pool`), not the verified pool;
- `choose(c: Choice) -> list[dict]`: the candidates it keeps of one instruction (`Choice` below);
- a docstring whose first line the report and `grape plugins arm` show.
The arms are plugins of kind `arm` (`grape.plugins`): the modules of this package, and any an installed package adds
through the `grape.arms` entry point group (`toy = "my_package.toy_arm"`, the entry's name equal to NAME). Arm
modules are stdlib-light, so the workflow reads the declarations at parse time without importing a stage.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from types import ModuleType
from typing import Mapping

READABLE = ("k", "original_sources", "strongest_source", "exclude_self", "reward_model")


@dataclass
class Choice:
    """What an arm sees for one instruction: its candidates (sorted by candidate_id, each with at least
    `candidate_id` and `source`), the target's scores (candidate_id -> mean log-prob; empty for unscored arms), the
    number to keep (`k`, resolved per instruction), the run's seed, the arm's settings, and counts to add to."""

    iid: str
    cands: list[dict]
    scores: Mapping[str, float]
    k: int
    seed: int
    settings: Mapping = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)


def ranked(c: Choice, sign: float) -> list[dict]:
    """The k scored candidates by mean log-prob (sign -1: most likely first), ties by candidate_id; unscored ones
    (skipped by the overlong policy) are not eligible and are counted."""
    scored = [x for x in c.cands if x["candidate_id"] in c.scores]
    if len(scored) < len(c.cands):
        c.counts["unscored_candidates"] += len(c.cands) - len(scored)
    if not scored:
        c.counts["instructions_without_scores"] += 1
        return []
    scored.sort(key=lambda x: (sign * c.scores[x["candidate_id"]], x["candidate_id"]))
    return scored[: c.k]


def rng(seed: int, instruction_id: str) -> random.Random:
    """A generator seeded per instruction: a draw does not depend on file order or on how the pool was split."""
    digest = hashlib.sha256(f"{seed}:{instruction_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def originals(c: Choice) -> tuple[str, ...]:
    return tuple(c.settings.get("original_sources") or ("original",))


@lru_cache(maxsize=1)
def registry() -> dict[str, ModuleType]:
    """name -> arm module: the plugins of kind `arm` (`grape.plugins`: shipped, then the `grape.arms` entry points),
    each checked: its NAME is the name it is registered by, without `.r<N>`, and it reads only known settings."""
    from grape import plugins

    kind = plugins.kind("arm")
    found: dict[str, ModuleType] = {}
    for name in kind.names():
        mod = kind.get(name)
        bad = [r for r in mod.READS if r not in READABLE]
        why = (
            f"is registered as {name!r}" if mod.NAME != name else
            "has a name ending in .r<N> (the round suffix)" if ROUND.match(name) else
            f"reads unknown settings {bad}" if bad else
            f"has an unknown POOL {mod.POOL!r}" if getattr(mod, "POOL", "pool") not in ("pool", "all_available") else None
        )  # fmt: skip
        if why:
            raise ValueError(f"arm plugin {mod.__name__} ({mod.NAME!r}) {why}")
        found[name] = mod
    return found


def ranks_by(name: str) -> str | None:
    """What an arm ranks by: "scores" (the target's log-probs), "rewards" (a reward model's), or None."""
    mod = get(name)
    return "scores" if mod.SCORES else getattr(mod, "RANKS_BY", None)


def get(name: str) -> ModuleType:
    """The plugin an arm runs (a later round's name runs its round-1 arm's plugin)."""
    name = base_arm(name)
    arms = registry()
    if name not in arms:
        raise ValueError(f"unknown arm {name!r} (known: {', '.join(sorted(arms))})")
    return arms[name]


def describe(name: str) -> str:
    from grape import plugins

    return plugins.kind("arm").describe(base_arm(name))


def check_settings(sel: Mapping) -> None:
    """Every arm named is a plugin, and its own settings (`select.options.<arm>`) fit its OPTIONS schema."""
    import jsonschema

    known = registry()
    for i, name in enumerate(sel["arms"]):
        if name not in known:
            raise ValueError(f"key 'select.arms.{i}': no arm {name!r} (known: {', '.join(sorted(known))})")
    for name, opts in (sel.get("options") or {}).items():
        if name not in known:
            raise ValueError(f"key 'select.options.{name}': no arm {name!r} (known: {', '.join(sorted(known))})")
        schema = {"type": "object", "additionalProperties": False, **getattr(known[name], "OPTIONS", {})}
        for e in jsonschema.Draft202012Validator(schema).iter_errors(opts):
            where = ".".join(str(p) for p in ["select", "options", name, *e.absolute_path])
            raise ValueError(f"key '{where}': {e.message}")


def settings_of(sel: Mapping, arm: str) -> dict:
    """An arm's settings only (its job's `select` slice): the `select` keys it reads and its own options, so adding
    an arm or changing another arm's setting reruns nothing of this one."""
    plugin = get(arm)
    out = {key: sel[key] for key in plugin.READS}
    own = (sel.get("options") or {}).get(base_arm(arm))
    if getattr(plugin, "OPTIONS", None) or own:
        out["options"] = dict(own or {})
    return out


# Multi-round GRAPE (the paper's App. G): round r+1 rescores the pool with round r's GRAPE model and fine-tunes the
# base target on the new pick. Round r >= 2 of an arm is the arm `<arm>.r<r>` (grape.r2, grape.r3, ...).
ROUND = re.compile(r"^(?P<arm>.+)\.r(?P<round>[2-9]|[1-9][0-9]+)$")


def base_arm(name: str) -> str:
    """The plugin an arm name runs: `grape.r2` -> `grape`."""
    m = ROUND.match(name)
    return m["arm"] if m else name


def scorer_of(name: str) -> str:
    """Which model's scores an arm ranks by: `base` (the untuned target) in round 1, the previous round's model of the
    same arm after (`grape.r2` -> `grape`, `grape.r3` -> `grape.r2`)."""
    m = ROUND.match(name)
    if not m:
        return "base"
    r = int(m["round"])
    return m["arm"] if r == 2 else f"{m['arm']}.r{r - 1}"


def round_arms(arms: list[str], rounds: int) -> list[str]:
    """The arms of GRAPE's rounds 2..`rounds` (`grape_rounds`), when `grape` is one of the arms."""
    return [f"grape.r{r}" for r in range(2, rounds + 1)] if "grape" in arms else []
