"""One registry shape for every plugin kind (grape.plugins), and models referenced by what they are (kind `tuned`).

An importer installed by another package (an entry point of group `grape.importers`) is checked by the config like a
shipped one and runs the real data stage; a misspelt plugin name is an error naming the config key and the known
names; another experiment's fine-tune is a model of this one (a sampling source), loaded from its folder and known
by its content, and the workflow plans it as an input of the model job, so a retrained fine-tune reruns what used it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import snakemake

from grape import config as gconfig
from grape import layout, plugins

TOY_IMPORTER = '''"""`data.kind: toy`: n_train instructions "say i", each with the response "i"."""


def load(d, seed, tally, workdir):
    rows = [{"id": f"t{i}", "instruction": f"say {i}", "responses": [{"response": str(i), "source": "original"}]}
            for i in range(d["n_train"])]
    return rows, []
'''


@pytest.fixture
def toy_importer(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "toy_importer-0.1.dist-info").mkdir(parents=True)
    (site / "toy_importer.py").write_text(TOY_IMPORTER)
    meta = site / "toy_importer-0.1.dist-info"
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-importer\nVersion: 0.1\n")
    (meta / "entry_points.txt").write_text("[grape.importers]\ntoy = toy_importer\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("toy_importer", None)


def test_an_installed_importer_is_a_plugin_like_a_shipped_one(toy_importer, tmp_path):
    from grape import data

    kind = plugins.kind("importer")
    assert "toy" in kind.names() and kind.names()[-1] == "toy"
    assert kind.describe("toy").startswith("`data.kind: toy`")
    cfg = gconfig.compose("tiny", ["data.kind=toy", "data.n_train=5"])  # the config check accepts it
    params = gconfig.stage_params(cfg, "data")
    counts = data.run(params, str(tmp_path / "train.jsonl"), str(tmp_path / "test.jsonl"))
    rows = [json.loads(x) for x in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert counts["train"] == 5 and [r["instruction"] for r in rows] == [f"say {i}" for i in range(5)]
    listing = subprocess.run(
        [sys.executable, "-m", "grape", "plugins", "importer"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "PYTHONPATH": str(toy_importer)},
    )
    assert listing.returncode == 0 and "toy" in listing.stdout and "ultrainteract" in listing.stdout


@pytest.mark.parametrize(
    "override, key, known",
    [
        ("data.kind=ultrainteracts", "data.kind", "ultrainteract"),
        ("score.backend=fast", "score.backend", "packed"),
        ("sample.backend=vllm2", "sample.backend", "openai"),
        ("models.tiny_b.kind=randm", "models.tiny_b.kind", "tuned"),
        ("select.arms=[grape,bestest]", "select.arms.1", "reverse"),
    ],
)
def test_a_misspelt_plugin_name_is_refused_naming_the_key_and_the_known_names(override, key, known):
    with pytest.raises(gconfig.ConfigError) as err:
        gconfig.compose("tiny", [override])
    assert f"key '{key}'" in str(err.value) and known in str(err.value)


def test_a_plugin_without_its_kinds_entry_point_is_refused(toy_importer, monkeypatch):
    monkeypatch.setitem(plugins.kind("score_backend").builtin, "broken", "toy_importer")  # has load, no CONTEXT_RESERVE
    with pytest.raises(ValueError, match="lacks CONTEXT_RESERVE"):
        plugins.kind("score_backend").get("broken")


TOY_RUNNER = '''"""`task: toy_judge`: the model answers `limit` prompts; the even ones count as won (a stand-in for a judge)."""

NAME = "toy_judge"


def run(lm, name, b, ctx):
    from lm_eval.api.instance import Instance

    gen = {"until": ["\\n"], "max_gen_toks": 2, "do_sample": False}
    prompts = [ctx["prompt"].format(instruction=f"say {i}") for i in range(b["limit"])]
    outs = lm.generate_until([Instance("generate_until", {}, (p, gen), i) for i, p in enumerate(prompts)])
    samples = [{"doc_id": i, "task": NAME, "id": f"{NAME}:{i}", "target": str(i), "output": o, "extracted": o,
                "correct": float(i % 2 == 0)} for i, o in enumerate(outs)]
    return {"task": NAME, "metric": "won,none", "accuracy": sum(s["correct"] for s in samples) / len(samples),
            "n": len(samples), "limit": b["limit"], "samples": samples}


def note(res):
    return "judged by the toy rule"
'''


def test_a_judge_like_benchmark_joins_through_the_runner_kind_alone(tiny_model_dir, tmp_path, monkeypatch):
    """A benchmark runner installed by another package (group `grape.benchmark_runners`) is evaluated and reported
    like AlpacaEval 2, with no line of the evaluate or report stage changed for it."""
    from grape import evaluate, report

    site = tmp_path / "site"
    (site / "toy_runner-0.1.dist-info").mkdir(parents=True)
    (site / "toy_runner.py").write_text(TOY_RUNNER)
    (site / "toy_runner-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: toy-runner\nVersion: 0.1\n"
    )
    (site / "toy_runner-0.1.dist-info" / "entry_points.txt").write_text(
        "[grape.benchmark_runners]\ntoy_judge = toy_runner\n"
    )
    monkeypatch.syspath_prepend(str(site))
    try:
        assert "toy_judge" in plugins.kind("benchmark_runner").names()
        entry = "{task:toy_judge,metric:won,filter:none,code:false,limit:3}"
        cfg = gconfig.compose("tiny", [f"+evaluate.benchmarks.toy={entry}", "evaluate.tasks=[toy]"])
        p = gconfig.stage_params(cfg, "evaluate", target="tiny_a", arm="base", benchmark="toy")
        evaluate.run(p, str(tiny_model_dir), None, str(tmp_path / "e.json"))
        res = json.loads((tmp_path / "e.json").read_text())["benchmarks"]["toy"]
        assert res["n"] == 3 and res["accuracy"] == pytest.approx(2 / 3) and len(res["samples"]) == 3
        rp = {"report": {"bootstrap": 10, "ci": 0.95}, "targets": ["tiny_a"], "arms": [], "seed": 0}
        table, per_problem = report.results_table(rp, {"evals": {("tiny_a", "base"): [tmp_path / "e.json"]}})
        assert table.loc[0, "note"].endswith("; judged by the toy rule") and ("tiny_a", "base", "toy") in per_problem
    finally:
        sys.modules.pop("toy_runner", None)


def _finished_finetune(root: Path) -> Path:
    """A model folder where experiment `exp1`'s sft stage puts target `t`'s GRAPE fine-tune (a tiny random model)."""
    from grape import models

    cfg = gconfig.compose("tiny", [])["models"]["tiny_b"]
    folder = root / layout.root("exp1") / layout.model("t", "grape")
    models.materialise("t", cfg, folder)
    return folder


def test_another_experiments_finetune_is_a_model_known_by_its_content(tmp_path, monkeypatch):
    from grape import models
    from grape.model_folder import load_model, resolve
    from grape.resume import model_identity

    monkeypatch.chdir(tmp_path)
    src = _finished_finetune(tmp_path)
    ref = {"kind": "tuned", "experiment_name": "exp1", "target": "t", "arm": "grape", "prompt_format": "plain"}
    ref["trust_remote_code"] = False
    models.materialise("ft", ref, tmp_path / "models" / "ft")
    where, manifest = resolve(tmp_path / "models" / "ft")
    assert Path(where) == src.resolve() and manifest["kind"] == "tuned"
    assert load_model(tmp_path / "models" / "ft").config.num_hidden_layers == 1  # the fine-tune's weights
    before = model_identity(tmp_path / "models" / "ft")
    weights = next(src.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x01")  # retrained upstream: same path, other content
    assert model_identity(tmp_path / "models" / "ft") != before
    with pytest.raises(ValueError, match="not a finished fine-tune"):
        models.materialise("ft2", {**ref, "arm": "random"}, tmp_path / "models" / "ft2")


@pytest.mark.slow
def test_the_workflow_samples_from_another_experiments_finetune(tmp_path):
    """The fine-tune of experiment exp1 becomes a source of tiny: its model job reads that folder (a retrained
    fine-tune reruns it), its samples join the pool; a fine-tune of the same experiment cannot be a source."""
    work = tmp_path / "work"
    src = _finished_finetune(work)
    ref = "+models.ft.kind=tuned +models.ft.experiment_name=exp1 +models.ft.target=t +models.ft.arm=grape "
    ref += "+models.ft.prompt_format=plain +models.ft.trust_remote_code=false"
    run = snakemake(work, "-n", "--cores", "1", "--config", "experiment=tiny", f"overrides={ref} sources=[tiny_b,ft]")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    plan = run.stdout
    assert f"input: {layout.root('exp1')}/{layout.model('t', 'grape')}" in plan and "candidates/ft.jsonl" in plan
    assert src.is_dir()
    with pytest.raises(gconfig.ConfigError, match="fine-tuned by this experiment"):
        gconfig.compose("tiny", [*ref.replace("exp1", "tiny").split(), "sources=[tiny_b,ft]"])
