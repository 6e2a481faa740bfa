"""AlpacaEval 2 (the Tulu-3 setting's AE2-LC / AE2-WR columns) through the `alpaca_eval` package and a judge endpoint.

AlpacaEval is not an lm-eval task: a judge model compares each of the evaluated model's answers with a reference
answer (GPT-4 Turbo's, in AlpacaEval 2) to the same instruction. So it runs only where a judge is configured
(`evaluate.benchmarks.alpaca_eval.judge`: any OpenAI-compatible server, e.g. your own `vllm serve` of a strong
instruct model, or a provider); otherwise `grape.evaluate` records it as not run and the report says why.

What happens, with the package's own pieces where it has them:
1. instructions and reference answers from `reference` (a JSON/JSONL file in the `tatsu-lab/alpaca_eval` schema:
   instruction, output, generator), or the hub dataset's AE2 reference file from the HF cache (`snakemake
   prefetch` fetches it); `limit` keeps the first N;
2. the evaluated model answers each instruction greedily, through lm-eval's already loaded `HFLM` (`generate_until`),
   on the experiment's plain template (its chat template with `evaluate.apply_chat_template`), as for the others;
3. alpaca_eval's `PairwiseAnnotator` with its AlpacaEval 2 judge protocol (`weighted_alpaca_eval_gpt4_turbo`: the
   judge's log-probabilities of "m" vs "M" give a soft preference; the two answers' order is randomised per
   instruction), with the model name and server replaced by the configured judge;
4. alpaca_eval's `get_winrate` (AE2-WR) and, on AE2's own instructions with its GLM's instruction difficulties
   (`df_gamed.csv` of the hub dataset, from the HF cache or the local copy `glm_data`),
   `get_length_controlled_winrate` (AE2-LC); otherwise LC is recorded as not computed, with the reason. The GLM
   looks each instruction's difficulty up by its position in the reference file, so a local `reference` gets LC
   only with a `glm_data` that describes exactly as many instructions (a copy of AE2's files, or a rehearsal's
   fixtures); a mismatch is refused before the model answers.

The per-instruction soft win (preference - 1, in [0, 1]) is the benchmark's per-problem score, so the report's paired
bootstrap between arms works as for every other benchmark. An instruction the judge left undecided (no "m"/"M"
among its top log-probs) is counted (`n_unjudged`) and left out of the win rate, as alpaca_eval does; a request the
judge refuses (key, model name, address) fails the job, and a one-token request checks all three before the model
starts answering. The API key is read from the environment variable the config names (`OPENAI_API_KEY` when none
is named), and never written anywhere.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Mapping

import yaml

from grape.errors import ConfigKeyError

JUDGE_PROTOCOL = "weighted_alpaca_eval_gpt4_turbo"  # alpaca_eval's AlpacaEval 2 annotator config
NAME = "alpaca_eval"
HUB_ID = "tatsu-lab/alpaca_eval"
# AE2's reference answers (GPT-4 Turbo's), a plain JSON file of the hub dataset, and the GLM's instruction
# difficulties for the length-controlled win rate. (alpaca_eval's own loader of the reference runs the dataset's
# loading script, i.e. remote code; the plain file needs none.)
REFERENCE_FILE = "alpaca_eval_gpt4_baseline.json"
HUB_FILES = [REFERENCE_FILE, "df_gamed.csv"]


def load_reference(reference: str | None, limit: int | None) -> list[dict]:
    """The instructions and reference answers: `reference` (JSON list or JSONL) or alpaca_eval's own AE2 set."""
    if reference:
        path = Path(reference)
        if not path.is_file():
            raise FileNotFoundError(f"evaluate.benchmarks.alpaca_eval.reference: {path} does not exist")
        text = path.read_text(encoding="utf-8")
        lines = [(0, text)] if text.lstrip().startswith("[") else enumerate(text.splitlines(), 1)
        rows = []
        for n, line in lines:
            if not line.strip():
                continue
            try:
                rows.extend(json.loads(line) if n == 0 else [json.loads(line)])
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}{f':{n}' if n else ''}: not JSON ({err})") from None
        where = str(path)
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(HUB_ID, REFERENCE_FILE, repo_type="dataset"))
        except Exception as err:  # offline and not in the cache
            raise FileNotFoundError(
                f"AlpacaEval 2 reference {HUB_ID}/{REFERENCE_FILE} is not in the HF cache and this job runs offline "
                f"({type(err).__name__}): on a machine with internet run `snakemake prefetch --config "
                "experiment=<name>` first, or set evaluate.benchmarks.alpaca_eval.reference to a local copy"
            ) from None
        rows, where = json.loads(path.read_text(encoding="utf-8")), f"{HUB_ID}/{REFERENCE_FILE}"
    if not isinstance(rows, list):
        raise ValueError(f"{where}: expected a JSON list of objects or JSON Lines, got {type(rows).__name__}")
    for i, r in enumerate(rows, 1):
        if not isinstance(r, dict):
            raise ValueError(f"{where}: row {i}: expected an object {{instruction, output}}, got {r!r:.60}")
        for field in ("instruction", "output"):
            if not isinstance(r.get(field), str) or not r[field].strip():
                raise ValueError(f"{where}: row {i}: field {field!r} must be a non-empty string")
    if len({r["instruction"] for r in rows}) != len(rows):
        raise ValueError(f"{where}: instructions repeat; AlpacaEval pairs answers by instruction")
    return rows[:limit] if limit else rows


def glm_size(path: str) -> int:
    """How many instructions a `df_gamed.csv` (the LC GLM's data) gives a difficulty for; checks its columns."""
    import pandas as pd

    where = f"evaluate.benchmarks.alpaca_eval.glm_data: {path}"
    if not Path(path).is_file():
        raise FileNotFoundError(f"{where} does not exist")
    df = pd.read_csv(path)
    missing = sorted({"index", "instruction_difficulty", "preference", "std_delta_len", "not_gamed_baseline"} - set(df))
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing} of alpaca_eval's df_gamed.csv")
    difficulty = df.drop_duplicates("index")["instruction_difficulty"]
    if not pd.to_numeric(difficulty, errors="coerce").map(math.isfinite).all():
        raise ValueError(f"{where}: column 'instruction_difficulty' has a value that is not a finite number")
    if sorted(df["index"].unique()) != list(range(df["index"].nunique())):
        raise ValueError(f"{where}: column 'index' must number the instructions 0..n-1")
    return int(df["index"].nunique())


def check_glm(b: Mapping) -> None:
    """A local `glm_data` is readable and describes as many instructions as the reference has: the LC GLM looks
    instructions up by position, so it needs the very reference it was fit on. Run before the model loads
    (`grape.evaluate.preflight`) and again before answering."""
    glm = b.get("glm_data")
    if not glm:
        return
    n_glm, n_ref = glm_size(glm), len(load_reference(b.get("reference"), None))
    if n_ref != n_glm:
        raise ValueError(
            f"evaluate.benchmarks.alpaca_eval: glm_data {glm} gives difficulties for {n_glm} instructions, "
            f"reference {b.get('reference') or HUB_ID} has {n_ref}: the LC GLM looks instructions up by position, "
            "so it needs the reference it was fit on (AE2's own: 805); drop glm_data for WR only"
        )


@contextlib.contextmanager
def glm_data_from(path: str | None):
    """alpaca_eval reads the GLM data with `hf_hub_download` and has no setting for another file: while LC is
    computed, that one call is answered with the local copy `path` (every other download goes through)."""
    if not path:
        yield
        return
    from alpaca_eval.metrics import glm_winrate

    hub = glm_winrate.hf_hub_download

    def local(repo_id, filename, **kwargs):
        return str(path) if (repo_id, filename) == (HUB_ID, "df_gamed.csv") else hub(repo_id, filename, **kwargs)

    glm_winrate.hf_hub_download = local
    try:
        yield
    finally:
        glm_winrate.hf_hub_download = hub


def annotator_config(judge: Mapping, workdir: Path) -> Path:
    """alpaca_eval's AE2 annotator config with the configured judge model and server: written to `workdir`."""
    from alpaca_eval import constants

    src = Path(constants.EVALUATORS_CONFIG_DIR) / JUDGE_PROTOCOL / "configs.yaml"
    cfg = yaml.safe_load(src.read_text())[JUDGE_PROTOCOL]
    cfg["prompt_template"] = str(Path(constants.EVALUATORS_CONFIG_DIR) / cfg["prompt_template"])
    clients = workdir / "clients.yaml"
    clients.write_text(yaml.safe_dump({"default": [{"base_url": judge["base_url"]}]}))  # the key: from the env
    cfg["completions_kwargs"] = {
        **cfg["completions_kwargs"],
        "model_name": judge["model"],
        "requires_chatml": True,  # the protocol is a chat prompt; alpaca_eval guesses this from OpenAI model names
        "client_config_path": str(clients),
        "num_procs": judge.get("concurrency") or 4,
    }
    out = workdir / "grape_judge" / "configs.yaml"
    out.parent.mkdir(parents=True)
    out.write_text(yaml.safe_dump({"grape_judge": cfg}, sort_keys=False))
    return out


def _api_key(judge: Mapping) -> str:
    """The judge's key, from the environment variable the config names (a local server needs none)."""
    key_env = judge.get("api_key_env")
    if key_env and not os.environ.get(key_env):
        raise ConfigKeyError(f"evaluate.benchmarks.alpaca_eval.judge.api_key_env: ${key_env} is not set")
    return os.environ[key_env] if key_env else os.environ.get("OPENAI_API_KEY", "EMPTY")


def preflight(judge: Mapping, key: str) -> None:
    """One tiny request in the protocol's form (chat, 1 token, top log-probs) before the model spends hours
    answering: a wrong key, model name or address fails here, naming the judge."""
    import openai

    client = openai.OpenAI(base_url=judge["base_url"], api_key=key, max_retries=2, timeout=120)
    try:
        client.chat.completions.create(model=judge["model"], messages=[{"role": "user", "content": "m or M?"}],
                                       max_tokens=1, logprobs=True, top_logprobs=5)  # fmt: skip
    except openai.OpenAIError as err:
        raise RuntimeError(
            f"evaluate.benchmarks.alpaca_eval.judge: {judge['model']!r} at {judge['base_url']} refused a one-token "
            f"judge request: {type(err).__name__}: {err}"
        ) from None


def context(lm, prompt: str, instruction: str, chat: bool) -> str:
    """What the evaluated model continues: the plain template, or (`evaluate.apply_chat_template`, as lm-eval does
    for the other benchmarks) the model's chat template around one user turn."""
    if chat:
        return lm.apply_chat_template([{"role": "user", "content": instruction}])
    return prompt.replace("{instruction}", instruction)


def _number(x) -> float | None:
    """alpaca_eval's metric as a JSON number, or None where it is missing or not finite (NaN: too few rows)."""
    return float(x) if x is not None and math.isfinite(float(x)) else None


SHARED = ("until", "max_gen_toks")  # the `evaluate` settings it falls back to where its entry leaves them unset


def not_run(name: str, b: Mapping, e: Mapping) -> str | None:
    if not b.get("judge"):
        return (
            f"not run: AlpacaEval 2 needs a judge model; set evaluate.benchmarks.{name}.judge "
            "{base_url, model, api_key_env} to an OpenAI-compatible server"
        )
    return None


def check(name: str, b: Mapping) -> None:
    check_glm(b)


def needs(name: str, b: Mapping) -> list[dict]:
    """What prefetch fetches for it: the hub dataset's reference answers and GLM data, unless a local reference."""
    if b.get("reference"):
        return []
    return [{"kind": "dataset", "name": name, "id": HUB_ID, "revision": None, "files": HUB_FILES}]


def run(lm, name: str, b: Mapping, ctx: Mapping) -> dict:
    """Answer, judge and score; returns `grape.evaluate`'s per-benchmark record (score, samples, what was used).
    `ctx["e"]`: the job's `evaluate` settings, for `until` / `max_gen_toks` the benchmark leaves unset."""
    prompt, defaults, label = ctx["prompt"], ctx["e"], ctx["model"]
    from alpaca_eval import metrics  # imported first: a missing package fails before any generation
    from alpaca_eval.annotators import PairwiseAnnotator
    from lm_eval.api.instance import Instance

    judge = b["judge"]
    rows = load_reference(b.get("reference"), b.get("limit"))
    glm = b.get("glm_data")
    check_glm(b)
    key = _api_key(judge)
    preflight(judge, key)
    gen = {"until": list(b.get("until") or defaults["until"]), "do_sample": False,
           "max_gen_toks": b.get("max_gen_toks") or defaults["max_gen_toks"]}  # fmt: skip
    chat = bool(defaults.get("apply_chat_template"))
    requests = [Instance("generate_until", r, (context(lm, prompt, r["instruction"], chat), gen), i)
                for i, r in enumerate(rows)]  # fmt: skip
    t0 = time.time()
    outputs = [o.strip() for o in lm.generate_until(requests)]
    t_generate = time.time() - t0
    t0 = time.time()
    before = os.environ.get("OPENAI_API_KEY")
    os.environ["OPENAI_API_KEY"] = key  # alpaca_eval's client reads the key from here; restored below
    try:
        with tempfile.TemporaryDirectory(prefix="grape_alpaca_eval_") as tmp:
            config = annotator_config(judge, Path(tmp))
            annotator = PairwiseAnnotator(annotators_config=str(config), seed=0, caching_path=None)
            reference = [{"instruction": r["instruction"], "output": r["output"],
                          "generator": r.get("generator", "reference")} for r in rows]  # fmt: skip
            model = [{"instruction": r["instruction"], "output": o, "generator": label} for r, o in zip(rows, outputs)]
            annotations = annotator.annotate_head2head(outputs_1=reference, outputs_2=model)
    finally:
        if before is None:
            os.environ.pop("OPENAI_API_KEY", None)
        else:
            os.environ["OPENAI_API_KEY"] = before
    t_judge = time.time() - t0
    pref = {(a["instruction"], a["output_2"]): a.get("preference") for a in annotations}
    samples, unjudged = [], 0
    for i, (r, o) in enumerate(zip(rows, outputs)):
        p = pref.get((r["instruction"], o))
        if p is None or p != p:  # None or NaN: no "m"/"M" among the judge's top log-probs
            unjudged += 1
            continue
        samples.append({"doc_id": i, "task": NAME, "id": f"{NAME}:{i}", "target": r["output"], "output": o,
                        "extracted": f"preference {float(p):.4f}", "correct": float(p) - 1.0})  # fmt: skip
    if not samples:
        raise ValueError(
            f"AlpacaEval 2: the judge {judge['model']!r} gave no usable preference for any of {len(rows)} "
            "instructions (no 'm' or 'M' among its top-5 log-probs): is it an instruction-following model?"
        )
    wr = metrics.get_winrate(
        [a for a in annotations if a.get("preference") is not None and a["preference"] == a["preference"]]
    )
    lc, lc_note = {}, None
    if b.get("reference") and not glm:
        lc_note = "LC not computed: its GLM knows the difficulty of AE2's own instructions only (see glm_data)"
    else:
        try:  # every row, in the reference's order: the GLM looks instruction difficulties up by position
            with glm_data_from(glm):
                lc = metrics.get_length_controlled_winrate(annotations, save_weights_dir=None)
        except Exception as err:  # offline without df_gamed.csv of the hub dataset in the HF cache
            lc_note = f"LC not computed ({type(err).__name__}: needs df_gamed.csv of {HUB_ID}: snakemake prefetch)"
        if lc and _number(lc.get("length_controlled_winrate")) is None:
            lc_note = "LC not computed: alpaca_eval's GLM gave no finite win rate"
    return {
        "task": NAME,
        "metric": "win,preference",
        "accuracy": sum(s["correct"] for s in samples) / len(samples),
        "n": len(samples),
        "n_unjudged": unjudged,
        "win_rate": wr.get("win_rate"),
        "lc_win_rate": _number(lc.get("length_controlled_winrate")),
        "lc_standard_error": _number(lc.get("lc_standard_error")),
        "lc_note": lc_note,
        "glm_data": glm,
        "judge": {"model": judge["model"], "base_url": judge["base_url"], "protocol": JUDGE_PROTOCOL},
        "reference": b.get("reference") or f"{HUB_ID}/{REFERENCE_FILE}",
        "limit": b.get("limit"),
        "seconds": {"generate": round(t_generate, 1), "judge": round(t_judge, 1)},
        "lm_eval_results": {},
        "samples": samples,
    }


def note(res: Mapping) -> str:
    """The report's note on an AlpacaEval 2 row: the judge, the length-controlled win rate, what went unjudged."""
    lc = res.get("lc_win_rate")
    lc_text = f"LC win rate {lc / 100:.3f}" if lc is not None else res.get("lc_note") or "LC not computed"
    return f"judge {res['judge']['model']}; {lc_text}; {res.get('n_unjudged', 0)} unjudged"


def extra_rows(res: Mapping, name: str) -> list[dict]:
    """AlpacaEval 2's second column, the length-controlled win rate (AE2-LC: the paper's Table 2 has both), from the
    same judged job: the GLM gives no per-instruction score, so its interval is alpaca_eval's standard error x 1.96,
    and it has no paired intervals. Where LC could not be computed the row says why (n 0, as a benchmark not run)."""
    row = {"benchmark": f"{name}_lc", "metric": "lc_win_rate"}
    lc = res.get("lc_win_rate")
    if lc is None:
        return [{**row, "accuracy": None, "ci_low": None, "ci_high": None, "n": 0, "note": res.get("lc_note") or ""}]
    acc, se = lc / 100, (res.get("lc_standard_error") or 0.0) / 100
    return [{**row, "accuracy": acc, "ci_low": max(0.0, acc - 1.96 * se), "ci_high": min(1.0, acc + 1.96 * se),
             "n": res["n"], "note": "length-controlled (alpaca_eval's GLM); interval: 1.96 standard errors"}]  # fmt: skip
