"""Hydra composition, JSON-schema validation with messages that name the key, Snakemake overrides."""

from __future__ import annotations

import pytest
import yaml
from helpers import REPO

from grape import config as gconfig
from grape.config import ConfigError


def test_default_experiment_is_demo_and_valid():
    cfg = gconfig.compose("demo")
    assert cfg["name"] == "demo"
    assert set(cfg["models"]) == {"smollm2", "gemma3"}
    assert cfg["targets"] == ["smollm2"]


def test_overrides_apply_and_are_typed():
    cfg = gconfig.compose("tiny", ["sft.lr=0.5", "sample.n=3", "select.arms=[grape,random]"])
    assert cfg["sft"]["lr"] == 0.5 and cfg["sample"]["n"] == 3 and cfg["select"]["arms"] == ["grape", "random"]


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["+sft.foo=1"], "sft.foo"),
        (["sft.lr=fast"], "sft.lr"),
        (["sample.n=0"], "sample.n"),
        (["score.overlong=drop"], "score.overlong"),
        (["select.arms=[grape,best]"], "select.arms"),
    ],
)
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        gconfig.compose("tiny", overrides)
    assert key in str(err.value)


def test_unknown_experiment_is_a_clear_error():
    with pytest.raises(ConfigError) as err:
        gconfig.compose("no_such_experiment")
    assert "no_such_experiment" in str(err.value)


def test_cross_checks():
    with pytest.raises(ConfigError, match="select.strongest_source"):
        gconfig.compose("tiny", ["select.strongest_source=nobody"])
    with pytest.raises(ConfigError, match="data.train_path"):
        gconfig.compose("tiny", ["data.kind=jsonl"])


def test_bad_cross_field_settings_fail_at_compose_time_naming_the_keys():
    for overrides, keys in ((["sft.micro_batch_tokens=512", "sft.padding_free=false"], "sft.micro_batch_tokens.*sft.padding_free"),
                            (["sft.padding_free=false", "sft.global_batch=6", "sft.batch_size=4"], "sft.global_batch 6.*sft.batch_size 4"),
                            (["sft.keep_checkpoints=true", "sft.save_steps=0"], "sft.keep_checkpoints.*sft.save_steps"),
                            (["sft.lora_targets=[]"], "sft.lora_targets"),
                            (["evaluate.sandbox_limits.memory_mb=1.5"], "evaluate.sandbox_limits")):  # fmt: skip
        with pytest.raises(ConfigError, match=keys):
            gconfig.compose("tiny", overrides)


def test_the_sft_settings_dataclass_schema_and_defaults_agree():
    """One typed object per stage (grape/sft/settings.py): its fields are the schema's keys, its defaults the
    catalog's values, so the three cannot drift apart."""
    import dataclasses

    from grape.sft.settings import SFTSettings

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    sft_schema = schema["properties"]["sft"]
    names = {f.name for f in dataclasses.fields(SFTSettings)}
    assert names == set(sft_schema["properties"]) and set(sft_schema["required"]) <= names
    defaults = yaml.safe_load((REPO / "config/config.yaml").read_text())["sft"]
    assert SFTSettings().as_dict() == defaults
    assert SFTSettings.from_config(gconfig.compose("demo", [])["sft"]).method == "lora"


def test_snakemake_config_becomes_hydra_overrides():
    exp, ov = gconfig.overrides_from_mapping(
        {
            "experiment": "tiny",
            "sft": {"lr": 0.02},
            "overrides": "sample.n=5 'evaluate.until=[\"x y\"]'",
            "sample": {"stop": ["\n\n"]},
        }
    )
    assert exp == "tiny"
    cfg = gconfig.compose(exp, ov)
    assert cfg["sft"]["lr"] == 0.02 and cfg["sample"]["n"] == 5 and cfg["sample"]["stop"] == ["\n\n"]
    assert cfg["evaluate"]["until"] == ["x y"]


@pytest.mark.parametrize("text", ["sft.lr=1e-4 '", "sft.lr=1e-4 name='my run", 'sample.n=5 "', "sft.lr=1e-4 \\"])
def test_overrides_that_do_not_split_into_words_are_a_config_error(text):
    with pytest.raises(ConfigError, match=r"key 'overrides': cannot split .* into shell words \(No ") as err:
        gconfig.overrides_from_mapping({"experiment": "tiny", "overrides": text})
    assert repr(text) in str(err.value)  # the string as given


def test_written_config_round_trips_and_is_left_alone_when_unchanged(tmp_path):
    cfg = gconfig.compose("tiny")
    path = tmp_path / "config.yaml"
    assert gconfig.write_if_changed(path, cfg) is True
    mtime = path.stat().st_mtime_ns
    assert gconfig.write_if_changed(path, cfg) is False and path.stat().st_mtime_ns == mtime
    assert gconfig.load(path) == cfg


def test_load_rejects_bad_file(tmp_path):
    cfg = gconfig.compose("tiny")
    cfg["sft"]["epochs"] = "one"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="sft.epochs"):
        gconfig.load(path)


def test_stage_params_are_slices():
    cfg = gconfig.compose("tiny")
    sft = gconfig.stage_params(cfg, "sft", target="tiny_a", arm="grape")
    assert sft["sft"] == cfg["sft"] and "sample" not in sft
    changed = gconfig.compose("tiny", ["sft.lr=0.5"])
    # a change to SFT leaves the sampling and scoring slices (their rerun triggers) untouched
    for stage, wc in [("sample", {"source": "tiny_a"}), ("score", {"target": "tiny_a"}), ("data", {})]:
        assert gconfig.stage_params(cfg, stage, **wc) == gconfig.stage_params(changed, stage, **wc)
    assert gconfig.stage_params(cfg, "sft", target="tiny_a", arm="grape") != gconfig.stage_params(
        changed, "sft", target="tiny_a", arm="grape"
    )


@pytest.mark.parametrize("text", ["plain", "it's", "back\\slash", "ends\\", "quote\\'d", "\n\nQuestion:", ""])
def test_strings_survive_the_override_grammar(text):
    exp, ov = gconfig.overrides_from_mapping({"experiment": "tiny", "sample": {"stop": [text, "x"]}})
    assert gconfig.compose(exp, ov)["sample"]["stop"] == [text, "x"]


def test_stage_names_are_checked_and_cli_errors_are_messages(tmp_path, capsys):
    from grape import cli

    cfg = gconfig.compose("tiny")
    with pytest.raises(ConfigError, match=r"target 'nope' is not one of the config's targets \(tiny_a\)"):
        gconfig.stage_params(cfg, "select", target="nope", arm="grape")
    path = tmp_path / "c.yaml"
    assert cli.main(["compose", "--experiment", "tiny", "-o", str(path)]) == 0
    assert (tmp_path / "c.yaml.meta.json").exists()
    assert gconfig.load(path) == cfg  # the written config keeps the composition (and its key order)
    assert list(gconfig.load(path)) == list(cfg)
    capsys.readouterr()
    args = ["select", "--params", '{"arm": "grape"}', "--pool", str(tmp_path), "--output", str(tmp_path / "s.jsonl")]
    assert cli.main(args) == 2
    assert "lack the key 'select'" in capsys.readouterr().err
    args = [
        "select",
        "--config",
        str(path),
        "--target",
        "tiny_a",
        "--arm",
        "grape",
        "--pool",
        str(tmp_path),
        "--output",
        str(tmp_path / "s.jsonl"),
    ]
    assert cli.main(args) == 2  # a folder where the pool file should be: a message, not a traceback
    assert "grape select: error:" in capsys.readouterr().err
