"""Compose an experiment config with Hydra, validate it, and hand each stage only its slice.

Configs are data: YAML composed by Hydra's compose API (no `_target_` instantiation, no code), then
checked against `workflow/schemas/config.schema.yaml`. A stage reads only `stage_params(cfg, stage)`;
Snakemake passes the very same slice to the job as the rule's `params` (a JSON string), so changing one
value reruns exactly the stages that read it (Snakemake's `params` rerun trigger) and nothing else.

Where the defaults are found: `$GRAPE_CONFIG_DIR` / `$GRAPE_SCHEMA` when set; else the copies installed
inside the package (`grape/conf`, `grape/schemas`, shipped by `pip install .`); else the checkout's
`config/` and `workflow/schemas/` (an editable install).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from grape.errors import ConfigError, ConfigKeyError  # noqa: F401 (the API: grape.config.ConfigError)
from grape.slices import OPERATIONAL, evaluate_settings, merge, split_operational  # noqa: F401 (the API)

HERE = Path(__file__).resolve().parent


def _default(env: str, installed: Path, checkout: Path) -> Path:
    if os.environ.get(env):
        return Path(os.environ[env])
    return installed if installed.exists() else checkout


CONFIG_DIR = _default("GRAPE_CONFIG_DIR", HERE / "conf", HERE.parent / "config")
SCHEMA = _default(
    "GRAPE_SCHEMA", HERE / "schemas" / "config.schema.yaml", HERE.parent / "workflow" / "schemas" / "config.schema.yaml"
)


class Settings(dict):
    """A stage's settings, nested dicts too: a missing key raises `ConfigKeyError` naming its dotted path."""

    def __init__(self, data=(), path: str = ""):  # takes what dict() takes: copies (`type(d)(pairs)`) stay Settings
        super().__init__(data)
        self.path = path
        for key in list(self):
            self[key] = _settings(self[key], f"{path}{key}.")

    def __missing__(self, key):
        raise ConfigKeyError(
            f"the stage's settings lack the key '{self.path}{key}'; pass the slice that `grape compose` + "
            "stage_params give, or use --config"
        )


def _settings(value, path: str):
    if type(value) is dict:
        return Settings(value, path)
    return [_settings(x, path) for x in value] if type(value) is list else value


def compose(
    experiment: str = "demo",
    overrides: Iterable[str] = (),
    config_dir: str | Path | None = None,
    schema_path: str | Path | None = None,
) -> dict:
    """Compose `config.yaml` + `experiment/<experiment>.yaml` + Hydra-style `key=value` overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    config_dir = Path(config_dir or CONFIG_DIR).resolve()
    if not (config_dir / "experiment" / f"{experiment}.yaml").exists():
        known = sorted(p.stem for p in (config_dir / "experiment").glob("*.yaml"))
        raise ConfigError(f"experiment '{experiment}' not found in {config_dir}/experiment (known: {', '.join(known)})")
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=[f"experiment={experiment}", *overrides])
        out = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"config composition failed: {err}") from None
    out["experiment"] = experiment
    validate(out, schema_path or SCHEMA)
    return out


def _format_path(path: Iterable[Any]) -> str:
    return ".".join(str(p) for p in path) or "<root>"


def validate(cfg: Mapping, schema_path: str | Path | None = None) -> None:
    """JSON-schema check plus the cross-references a schema cannot express."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path or SCHEMA).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: (list(e.absolute_path), e.message))
    if errors:
        lines = []
        for e in errors[:10]:
            if e.validator == "additionalProperties":
                extra = sorted(set(e.instance) - set(e.schema.get("properties", {})))
                for key in extra:
                    lines.append(f"unknown key '{_format_path([*e.absolute_path, key])}'")
            elif e.validator == "required":
                lines.append(f"key '{_format_path(e.absolute_path)}': {e.message}")
            else:
                lines.append(f"key '{_format_path(e.absolute_path)}': {e.message}")
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines))
    models = cfg["models"]
    for field in ("sources", "targets"):
        for i, name in enumerate(cfg[field]):
            if name not in models:
                raise ConfigError(
                    f"key '{field}.{i}': model '{name}' is not defined under 'models' (defined: {', '.join(models)})"
                )
    for field in ("sources", "targets"):
        if len(set(cfg[field])) != len(cfg[field]):
            raise ConfigError(f"key '{field}': names repeat")
    from grape import arms, plugins

    try:
        plugins.check_config(cfg)
        arms.check_settings(cfg["select"])
    except ValueError as err:
        raise ConfigError(str(err)) from None
    for i, name in enumerate(cfg["sources"]):
        m = models[name]
        if m["kind"] == "tuned" and m["experiment_name"] == cfg["name"]:
            raise ConfigError(
                f"key 'sources.{i}': model '{name}' is fine-tuned by this experiment ({cfg['name']}) on a selection "
                "from the pool it would sample into; sample from another experiment's fine-tune"
            )
    if "reward" in cfg["select"]["arms"] and cfg["select"]["reward_model"] not in models:
        raise ConfigError(
            f"key 'select.reward_model': {cfg['select']['reward_model']!r} is not a model under 'models' (the "
            "'reward' arm ranks by its scores)"
        )
    if "strongest" in cfg["select"]["arms"] and cfg["select"]["strongest_source"] not in cfg["sources"]:
        raise ConfigError(
            f"key 'select.strongest_source': '{cfg['select']['strongest_source']}' is not one of "
            f"the sources {cfg['sources']} (needed by the 'strongest' arm)"
        )
    from grape.sft.settings import SFTSettings

    try:  # the typed settings' cross-field checks, at compose time: before any job runs
        SFTSettings.from_config(cfg["sft"])
    except ValueError as err:
        raise ConfigError(f"invalid config: {err}") from None
    ev = cfg["evaluate"]
    for i, name in enumerate(ev["tasks"]):
        if name != "local" and name not in ev["benchmarks"]:
            raise ConfigError(
                f"key 'evaluate.tasks.{i}': benchmark '{name}' is not local and not under 'evaluate.benchmarks' "
                f"(defined: {', '.join(ev['benchmarks'])})"
            )
    d = cfg["data"]
    needs = {
        "jsonl": ("train_path", "test_path"),
        "generic": ("path",),
        "ultrainteract": ("path",),
        "tulu3": ("datasets",),
    }
    for key in needs.get(d["kind"], ()):
        if not d.get(key):
            raise ConfigError(f"key 'data.{key}': required when data.kind is '{d['kind']}'")
    names = [ds["name"] for ds in d.get("datasets") or []]
    if len(set(names)) != len(names):
        raise ConfigError("key 'data.datasets': names repeat (each names the source of its responses)")
    if not cfg["sources"] and d["kind"] in ("demo", "jsonl"):
        raise ConfigError(
            f"key 'sources': data.kind '{d['kind']}' has one response per instruction; name models to sample more"
        )
    if "original" in cfg["sources"]:
        raise ConfigError("key 'sources': 'original' is reserved for the dataset's own responses")


def trained_arms(cfg: Mapping) -> list[str]:
    """Every arm a target is fine-tuned on: `select.arms`, then GRAPE's later rounds (`grape_rounds`: grape.r2, ...)."""
    from grape import arms

    return [*cfg["select"]["arms"], *arms.round_arms(cfg["select"]["arms"], cfg["grape_rounds"])]


def _flatten(prefix: str, value: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(value, Mapping) and (value or not prefix):
        for k, v in value.items():
            yield from _flatten(f"{prefix}.{k}" if prefix else str(k), v)
    else:
        yield prefix, value


def _hydra_value(value: Any) -> str:
    """Write a (YAML-typed) value in Hydra's override grammar; strings are always quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        # Hydra reads backslashes literally except before a quote (or the closing quote).
        body = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), value)
        return f"'{body}'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"config value {value!r} has an unsupported type {type(value).__name__}")


def overrides_from_mapping(smk_config: Mapping) -> tuple[str, list[str]]:
    """Turn Snakemake's config into (experiment, Hydra overrides).

    Snakemake's `--config` takes only plain identifiers as keys, so Hydra-style dotted overrides travel in one
    string: `--config experiment=tiny overrides="sft.lr=2e-4 sample.n=8"` (shell-quoted words, Hydra grammar).
    Nested values (`--config 'sft={lr: 2e-4}'`, or a `--configfile`) are turned into overrides too.
    """
    experiment = str(smk_config.get("experiment", "demo"))
    extra = smk_config.get("overrides") or []
    if isinstance(extra, str):
        try:
            extra = shlex.split(extra)
        except ValueError as err:  # an unclosed quote, a trailing backslash
            raise ConfigError(
                f"key 'overrides': cannot split {extra!r} into shell words ({err}): quote each value whole, "
                "e.g. overrides=\"sft.lr=1e-4 name='my run'\""
            ) from None
    elif not isinstance(extra, (list, tuple)):
        raise ConfigError(f"key 'overrides': expected a string or a list of Hydra overrides, got {extra!r}")
    overrides = [
        f"{key}={_hydra_value(value)}"
        for key, value in _flatten("", {k: v for k, v in smk_config.items() if k not in ("experiment", "overrides")})
    ]
    return experiment, overrides + [str(o) for o in extra]


def dump(cfg: Mapping) -> str:
    return yaml.safe_dump(dict(cfg), sort_keys=False, allow_unicode=True, width=10**6)


def write_if_changed(path: str | Path, cfg: Mapping) -> bool:
    """Write the composed config beside the results, leaving the file untouched when identical."""
    from grape.io import atomic_path

    path, text = Path(path), dump(cfg)
    if path.exists() and path.read_text() == text:
        return False
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return True


def load(path: str | Path) -> dict:
    """Load a composed config file (as written by `write_if_changed` or `grape compose`) and validate it."""
    try:
        cfg = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    validate(cfg)
    return cfg


def stage_params(cfg: Mapping, stage: str, **wc: str) -> dict:
    """The exact slice of the config a stage reads. Used for the rule's params and by the stage itself."""
    from grape import arms

    cfg = copy.deepcopy(dict(cfg))
    trained = trained_arms(cfg)
    for key, field in (("model", "models"), ("source", "sources"), ("target", "targets"), ("arm", "select.arms"),
                       ("scorer", "select.arms"), ("benchmark", "evaluate.tasks")):  # fmt: skip
        known = {"select.arms": ["base", *trained], "evaluate.tasks": cfg["evaluate"]["tasks"]}.get(
            field, cfg.get(field)
        )
        if key in wc and wc[key] not in known:
            raise ConfigError(f"{key} {wc[key]!r} is not one of the config's {field} ({', '.join(known)})")
    common = {"seed": cfg["seed"], "threads": cfg["threads"]}
    if stage == "data":
        return {**common, "experiment": cfg.get("experiment"), "data": cfg["data"]}
    if stage == "model":
        return {"name": wc["model"], "experiment": cfg.get("experiment"), "model": cfg["models"][wc["model"]]}
    if stage == "prefetch":
        e = cfg["evaluate"]  # the benchmarks run: AlpacaEval 2 reads hub files outside lm-eval's datasets
        run = {"tasks": e["tasks"], "benchmarks": {n: e["benchmarks"][n] for n in e["tasks"] if n in e["benchmarks"]},
               "allow_code_execution": e["allow_code_execution"], "sandbox": e["sandbox"]}  # fmt: skip
        return {"experiment": cfg.get("experiment"), "cache_dir": cfg.get("cache_dir"), "models": cfg["models"],
                "data": cfg["data"], "evaluate": run}  # fmt: skip
    if stage == "sample":
        return {
            **common,
            "source": wc["source"],
            "prompt_format": cfg["models"][wc["source"]]["prompt_format"],
            **(
                {"endpoint": cfg["models"][wc["source"]]["endpoint"]}
                if cfg["models"][wc["source"]].get("endpoint")
                else {}
            ),
            "sample": cfg["sample"],
            "template": cfg["template"],
        }
    if stage == "reward":
        return {**common, "reward": cfg["reward"], "template": cfg["template"]}
    if stage == "verify":
        return {"verify": cfg["verify"], "sources": cfg["sources"]}
    if stage == "score":
        return {**common, "target": wc["target"], "score": cfg["score"], "template": cfg["template"]}
    if stage == "select":
        return {
            "seed": cfg["seed"],
            "threads": cfg["threads"],
            "arm": wc["arm"],
            "target": wc["target"],
            "select": arms.settings_of(cfg["select"], wc["arm"]),
            "template": cfg["template"],
        }
    if stage == "sft":
        return {**common, "target": wc["target"], "arm": wc["arm"], "sft": cfg["sft"], "template": cfg["template"]}
    if stage == "evaluate":  # one benchmark per job (the workflow's), or every benchmark (`grape evaluate` by hand)
        e = cfg["evaluate"]
        bench, ev = wc.get("benchmark"), e
        if bench:  # one benchmark's settings, and the shared ones its runner reads
            from grape import plugins

            shared = () if bench == "local" else getattr(plugins.benchmark_runner(e["benchmarks"][bench]), "SHARED", ())
            ev = evaluate_settings(e, bench, tuple(shared))
        return {**common, "name": cfg["name"], "evaluate": ev, "template": cfg["template"]}
    if stage == "evaluate_task":  # the held-out split as an lm-eval task: what the local benchmark's YAML holds
        local = {k: cfg["evaluate"][k] for k in ("until", "max_gen_toks", "local_mode", "local_choices")}
        return {"name": cfg["name"], "evaluate": {**local, "tasks": ["local"]}, "template": cfg["template"]}
    if stage == "report":
        return {
            "seed": cfg["seed"],
            "name": cfg["name"],
            "report": cfg["report"],
            "targets": cfg["targets"],
            "arms": trained_arms(cfg),
            "sources": cfg["sources"],
            "benchmarks": cfg["evaluate"]["tasks"],
            "exclude_self": cfg["select"]["exclude_self"],
        }
    if stage == "compose":
        return cfg
    raise KeyError(stage)


STAGES = ("compose", "prefetch", "data", "model", "sample", "verify", "score", "reward", "select", "sft", "evaluate",
          "evaluate_task", "report")  # fmt: skip


def params_json(cfg: Mapping, stage: str, **wc: str) -> str:
    """What determines a stage's output, as the JSON string a rule passes in `params` (`grape <stage> --params`)."""
    # Key order is the composition's (deterministic), so the composed config keeps Hydra's order when written.
    return json.dumps(split_operational(stage_params(cfg, stage, **wc))[0], ensure_ascii=False)


def run_options_json(cfg: Mapping, stage: str, **wc: str) -> str:
    """The slice's operational values as the JSON a rule passes from its resources (`--run-options`)."""
    return json.dumps(split_operational(stage_params(cfg, stage, **wc))[1], ensure_ascii=False)


def parse_params(text: str) -> dict:
    try:
        params = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--params: not valid JSON: {err}") from None
    if not isinstance(params, dict):
        raise ConfigError("--params: expected a JSON object")
    return params
