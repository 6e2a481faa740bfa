"""The package's shape stays what docs/architecture.md says: read from the source, not assumed.

- the import graph of `grape` has no cycles (lazy imports inside functions count too);
- no private name (`_x`) is used outside its own module;
- no stage module imports another stage's module (shared modules and the CLI may import any), but for the couplings
  `READS` names (the report reads evaluation results);
- a stage of more than one file is a folder (`grape/<stage>/`): no `grape/<stage>_*.py` beside it;
- no module is over 400 lines;
- every backend registry has exactly the names the config schema allows, and each entry loads;
- docs/data_contract.md shows every row spec exactly as `grape.contracts` defines it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "grape"
STAGES = {"data", "models", "sample", "verify", "score", "select", "sft", "evaluate", "report"}
# The couplings between stages that are real, said here rather than hidden by where a file lies: the report reads
# evaluation results (through each result's benchmark runner: grape.plugins.benchmark_runner, its note and extra rows).
READS = {"report": {"evaluate"}}
MAX_LINES = 400


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _resolve(mod: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_pkg = MODULES[mod].name == "__init__.py"
    base = mod.split(".")[: len(mod.split(".")) - node.level + is_pkg]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(mod: str):
    """(imported module, name or None, line) for every import of a grape module, at any depth; plus the local
    names bound to grape modules (to find `module._private` attribute uses)."""
    tree = ast.parse(MODULES[mod].read_text(), filename=str(MODULES[mod]))
    found, bound = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "grape":
                    found.append((alias.name, None, node.lineno))
                    if alias.asname:
                        bound[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            src = _resolve(mod, node)
            if src.split(".")[0] != "grape":
                continue
            for alias in node.names:
                full = f"{src}.{alias.name}"
                if full in MODULES:
                    found.append((full, None, node.lineno))
                    bound[alias.asname or alias.name] = full
                else:
                    found.append((src, alias.name, node.lineno))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
            found.append((bound[node.value.id], node.attr, node.lineno))
    return found


def _private(name: str | None) -> bool:
    return bool(name) and name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _stage(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def test_modules_were_found():
    assert {"grape.cli", "grape.contracts", "grape.score", "grape.score.packed", "grape.sample.hf"} <= set(MODULES)


def test_no_private_name_crosses_a_module_boundary():
    bad = [
        f"{mod}:{line} uses {src}.{name}"
        for mod in MODULES
        for src, name, line in _imports(mod)
        if _private(name) and src != mod
    ]
    assert not bad, "\n".join(bad)


def test_import_graph_has_no_cycles():
    graph = {mod: sorted({src for src, _, _ in _imports(mod) if src in MODULES and src != mod}) for mod in MODULES}
    state, cycles = {}, []

    def visit(mod, stack):
        state[mod] = "open"
        for nxt in graph[mod]:
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[mod] = "done"

    for mod in graph:
        if mod not in state:
            visit(mod, [mod])
    assert not cycles, "\n".join(cycles)


def test_a_stage_of_several_files_is_one_folder():
    top = sorted(p.stem for p in PKG.glob("*.py"))
    strays = [m for m in top for st in STAGES if m.startswith(st + "_") or m == st and (PKG / st).is_dir()]
    assert not strays, f"stage files outside their folders: {strays}"
    assert {"sft", "report", "evaluate"} <= {p.name for p in PKG.iterdir() if p.is_dir()}


def test_no_stage_imports_the_config_layer_above_it():
    """grape.config composes every stage's settings (it imports grape.sft.settings): a stage importing it back would
    run an arrow upward; the errors they share live in grape.errors."""
    bad = [f"{mod}:{line}" for mod in MODULES if _stage(mod) for src, _, line in _imports(mod) if src == "grape.config"]
    assert not bad, bad


def test_no_stage_imports_another_stage():
    bad = []
    for mod in MODULES:
        mine = _stage(mod)
        for src, _, line in _imports(mod):
            theirs = _stage(src)
            if mine and theirs and theirs != mine and theirs not in READS.get(mine, ()):
                bad.append(f"{mod}:{line} (stage {mine}) imports {src} (stage {theirs})")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_module_size(mod):
    n = len(MODULES[mod].read_text().splitlines())
    assert n <= MAX_LINES, f"{MODULES[mod]} has {n} lines; split it by concern"


@pytest.mark.parametrize("kind", ["importer", "model_kind", "sample_backend", "score_backend", "arm"])
def test_every_shipped_plugin_imports_and_has_its_kinds_entry_points(kind):
    """One registry shape (grape.plugins): each shipped plugin imports (its heavy libraries stay lazy), has what its
    kind needs and describes itself; the schema leaves plugin names to the registry (no enum to keep in step)."""
    from grape import plugins

    k = plugins.kind(kind)
    assert list(k.builtin) and k.names()[: len(k.builtin)] == list(k.builtin)
    for name in k.builtin:
        mod = k.get(name)
        assert all(hasattr(mod, a) for a in k.needs) and k.describe(name), f"{kind} {name}"
    text = (REPO / "workflow/schemas/config.schema.yaml").read_text()
    for key in ("kind: {enum", "backend: {enum"):
        assert key not in text, f"the schema lists plugin names ({key}); the registry checks them"


def test_every_arm_plugin_declares_itself_and_the_config_checks_arm_names():
    from grape import arms
    from grape import config as gconfig

    reg = arms.registry()
    assert {"grape", "reverse", "random", "strongest", "all", "original", "self"} <= set(reg)
    for name, mod in reg.items():
        assert isinstance(mod.SCORES, bool) and set(mod.READS) <= set(arms.READABLE) and callable(mod.choose)
        assert arms.describe(name), f"arm {name} has no docstring"
    assert {n for n, m in reg.items() if m.SCORES} == {"grape", "reverse", "self"}
    with pytest.raises(gconfig.ConfigError, match="no arm 'best'"):
        gconfig.compose("tiny", ["select.arms=[grape,best]"])
    with pytest.raises(gconfig.ConfigError, match="select.options.grape"):
        gconfig.compose("tiny", ["+select.options.grape.x=1"])


def test_data_contract_doc_matches_the_code():
    from grape import contracts

    doc = (REPO / "docs/data_contract.md").read_text()
    for name, spec in contracts.ALL.items():
        assert contracts.markdown(spec) in doc, f"docs/data_contract.md: the {name} table differs from grape.contracts"
