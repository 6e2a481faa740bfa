"""One registry for every plugin kind: data importers, model kinds, sample and score backends, selection arms,
benchmark runners.

Every kind has the same shape (as lm-evaluation-harness keeps one registry for its tasks, metrics and models): a name
the config uses, the config key that names it, the modules shipped here, an entry-point group through which an
installed package adds more, and the attributes a plugin module must have. Lookup is lazy: listing names imports
nothing (entry points are listed by name), and only the plugin a job uses is imported, so the workflow checks the
config at parse time without importing torch. A plugin describes itself with its docstring's first line.

Adding one: a module with the kind's attributes (below, and the kind's package docstring), then either a line in
`BUILTIN` here or, from another package, an entry point (`[project.entry-points."grape.importers"] mine = "pkg.mod"`).
`grape plugins` lists them all.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from types import ModuleType
from typing import Mapping


@dataclass(frozen=True)
class Kind:
    """One plugin kind: `key` is the config key naming a plugin (for errors), `group` the entry-point group,
    `builtin` name -> module shipped here, `needs` the attributes every plugin module has."""

    name: str
    key: str
    group: str
    builtin: Mapping[str, str]
    needs: tuple[str, ...]

    def _entry_points(self) -> dict:
        return {ep.name: ep for ep in importlib.metadata.entry_points(group=self.group)}

    def names(self) -> list[str]:
        """Every plugin of this kind, shipped first, without importing any."""
        return [*self.builtin, *(n for n in self._entry_points() if n not in self.builtin)]

    def get(self, name: str) -> ModuleType:
        """The plugin module `name`, imported now and checked for the kind's attributes."""
        if name in self.builtin:
            mod = importlib.import_module(self.builtin[name])
        else:
            eps = self._entry_points()
            if name not in eps:
                raise ValueError(f"{self.key} {name!r} is not a known {self.name} (known: {', '.join(self.names())})")
            mod = eps[name].load()
        missing = [a for a in self.needs if not hasattr(mod, a)]
        if missing:
            raise ValueError(f"{self.name} plugin {name!r} ({mod.__name__}) lacks {', '.join(missing)}")
        return mod

    def check(self, name: str, where: str) -> None:
        """A config value names a plugin of this kind; else an error naming the config key and the known names."""
        if name not in self.names():
            raise ValueError(f"key '{where}': {name!r} is not a {self.name} (known: {', '.join(self.names())})")

    def describe(self, name: str) -> str:
        """The plugin's docstring's first paragraph, on one line."""
        return " ".join((self.get(name).__doc__ or "").strip().split("\n\n")[0].split())


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "importer",
            "data.kind",
            "grape.importers",
            {
                "demo": "grape.data.demo",
                "jsonl": "grape.data.jsonl",
                "generic": "grape.data.generic",
                "ultrainteract": "grape.data.ultrainteract",
                "tulu3": "grape.data.tulu3",
            },
            ("load",),
        ),
        Kind(
            "model_kind",
            "models.<name>.kind",
            "grape.model_kinds",
            {
                "gguf_package": "grape.models.gguf",
                "random": "grape.models.random_init",
                "hf": "grape.models.hub",
                "endpoint": "grape.models.endpoint",
                "tuned": "grape.models.tuned",
            },
            ("build",),
        ),
        Kind(
            "sample_backend",
            "sample.backend",
            "grape.sample_backends",
            {"hf": "grape.sample.hf", "vllm": "grape.sample.vllm", "openai": "grape.sample.openai"},
            ("generate",),
        ),
        Kind(
            "score_backend",
            "score.backend",
            "grape.score_backends",
            {"packed": "grape.score.packed", "reference": "grape.score.reference", "vllm": "grape.score.vllm"},
            ("load", "CONTEXT_RESERVE"),
        ),
        Kind(
            "arm",
            "select.arms",
            "grape.arms",
            {
                "grape": "grape.arms.grape",
                "reverse": "grape.arms.reverse",
                "random": "grape.arms.random_draw",
                "original": "grape.arms.original",
                "strongest": "grape.arms.strongest",
                "3x": "grape.arms.three_x",
                "all": "grape.arms.all_candidates",
                "sft_full": "grape.arms.sft_full",
                "all_available": "grape.arms.all_available",
                "self": "grape.arms.self_samples",
                "reward": "grape.arms.reward",
            },
            ("NAME", "SCORES", "READS", "choose"),
        ),
        Kind(
            "benchmark_runner",
            "evaluate.benchmarks.<name>.task",
            "grape.benchmark_runners",
            {"lm_eval": "grape.evaluate.lm_eval_runner", "alpaca_eval": "grape.evaluate.alpaca"},
            ("NAME", "run"),
        ),
    )
}


def benchmark_runner(b: Mapping) -> ModuleType:
    """The runner of a benchmark entry (or of an evaluation result, which keeps its `task`): the runner its task
    names, else lm-eval (`grape.evaluate.lm_eval_runner`), whose tasks are all the others."""
    k = KINDS["benchmark_runner"]
    return k.get(b["task"] if b["task"] != "lm_eval" and b["task"] in k.names() else "lm_eval")


def kind(name: str) -> Kind:
    return KINDS[name]


def check_config(cfg: Mapping) -> None:
    """Every plugin the config names exists (the schema cannot list plugins installed later)."""
    KINDS["importer"].check(cfg["data"]["kind"], "data.kind")
    for name, m in cfg["models"].items():
        KINDS["model_kind"].check(m["kind"], f"models.{name}.kind")
    KINDS["sample_backend"].check(cfg["sample"]["backend"], "sample.backend")
    KINDS["score_backend"].check(cfg["score"]["backend"], "score.backend")


def listing(only: str | None = None) -> str:
    """Every plugin by kind (or of one kind) with what it does; an arm also with what it ranks by and reads."""
    lines = []
    for k in [KINDS[only]] if only else KINDS.values():
        lines.append(f"{k.name} ({k.key}; entry points: {k.group})")
        for name in k.names():
            mod, extra = k.get(name), ""
            if k.name == "arm":  # what it ranks by (grape.arms.ranks_by) and the select settings it reads
                by = "scores" if mod.SCORES else getattr(mod, "RANKS_BY", None) or "nothing"
                extra = f"  [ranks by {by}; reads {', '.join(mod.READS)}]"
            lines.append(f"  {name:<14} {k.describe(name)}{extra}")
    return "\n".join(lines)
