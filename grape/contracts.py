"""Every table the workflow passes between stages, defined once (described in docs/data_contract.md).

Stages read their inputs with these specs (`grape.io.read_jsonl(path, SPEC)`), so a malformed row stops the
stage with `file:line: field 'x': problem` instead of changing what GRAPE selects. Stages import specs from
here and never from one another. A field that not every dataset has is optional (`required=False`); a stage
that needs it asks for it by name (`read_jsonl(..., require={"answer": "why"})`) and says why when it is absent.
"""

from __future__ import annotations

import math

from grape.io import Field, describe_bounds

STR = (str,)
NUM = (int, float)
# The possible values of a log-probability and of a count: a probability is at most 1 (log-softmax is <= 0 in
# floating point too: x_i - logsumexp(x) with logsumexp(x) >= max(x) >= x_i, rounding being monotonic, so no slack),
# and a scored response has at least one token.
LOGPROB = (-math.inf, 0)
COUNT = (1, math.inf)
FINITE = (-math.inf, math.inf)  # any number but NaN and +-Infinity

# data/train.jsonl: one instruction with the dataset's own responses (any number, each tagged with its source).
TRAIN = {
    "id": Field(STR, True, True, "instruction id, unique"),
    "instruction": Field(STR, True, True, "the instruction text (prior turns flattened, docs/importers.md)"),
    "responses": Field((list,), True, False, "the dataset's own responses: objects {response, source}"),
    "answer": Field((str, int, float), False, False, "final answer for the correctness filter (optional)"),
    "check": Field(STR, False, True, "how answers are compared: a `grape.answers.RULES` name (default numeric)"),
    "task": Field(STR, False, True, "task type (UltraInteract: Coding, Math_CoT, Math_PoT, Logic)"),
    "context": Field((list,), False, False, "multi-turn: the messages before the answer, `[{role, content}]`"),
}

# One item of TRAIN's `responses`.
TRAIN_RESPONSE = {
    "response": Field(STR, True, True, "the response text"),
    "source": Field(STR, True, True, "where it comes from (`original`, or the dataset it was taken from)"),
}

# data/test.jsonl: held-out problems for evaluation.
TEST = {
    "id": Field(STR, True, True, "problem id, unique"),
    "instruction": Field(STR, True, True, "the problem text"),
    "answer": Field((str, int, float), True, False, "the reference answer the evaluation compares against"),
}

# candidates/<source>.jsonl: the sample stage's responses of one source model.
CANDIDATE = {
    "candidate_id": Field(STR, True, True, "`{instruction_id}:{source}:{sample_index}`, unique"),
    "instruction_id": Field(STR, True, True, "id of the train instruction"),
    "instruction": Field(STR, True, True, "the instruction text"),
    "response": Field(STR, True, False, "the sampled text (may be empty: verify counts and drops it)"),
    "source": Field(STR, True, True, "the model that wrote it"),
    "sample_index": Field((int,), True, False, "0..n-1"),
    "answer": Field(STR, False, False, "the instruction's reference answer, copied from train (optional)"),
    "finish": Field(STR, False, True, "why generation ended: stop | eos | length"),
    "sampling": Field((dict,), False, False, "the sampling parameters that made it"),
}

# pool/pool.jsonl: every kept candidate plus each instruction's `original`, the input of scoring and selection.
POOL = {
    "candidate_id": CANDIDATE["candidate_id"],
    "instruction_id": CANDIDATE["instruction_id"],
    "instruction": CANDIDATE["instruction"],
    "response": Field(STR, True, True, "the candidate response (never blank in the pool)"),
    "source": Field(STR, True, True, "the source model, or `original`"),
    "sample_index": CANDIDATE["sample_index"],
    "answer": CANDIDATE["answer"],
    "correct": Field((bool, type(None)), True, False, "final answer matches (null: no answer to compare)"),
    "task": TRAIN["task"],
    "context": TRAIN["context"],
}

# scores/<target>/<scorer>.jsonl: one row per scored candidate, sorted by candidate_id.
SCORED = {
    "candidate_id": Field(STR, True, True, "the pool candidate"),
    "instruction_id": Field(STR, True, True, "its instruction"),
    "source": Field(STR, True, True, "its source"),
    "n_tokens": Field((int,), True, False, "response tokens scored", COUNT),
    "sum_logprob": Field(NUM, True, False, "sum of log p(token | prompt, earlier response tokens)", LOGPROB),
    "mean_logprob": Field(NUM, True, False, "sum_logprob / n_tokens: GRAPE's criterion", LOGPROB),
    "truncated": Field((bool,), True, False, "response cut to the context (score.overlong: truncate)"),
}

# rewards/<reward model>.jsonl: a reward model's score of every pool candidate (the `reward` arm ranks by it).
REWARD = {
    "candidate_id": Field(STR, True, True, "the pool candidate"),
    "instruction_id": Field(STR, True, True, "its instruction"),
    "source": Field(STR, True, True, "its source"),
    "reward": Field(NUM, True, False, "the reward model's score of (instruction, response), higher is better", FINITE),
}

# scores/<target>/<scorer>.skipped.jsonl: candidates the target could not score, with the reason.
SKIPPED = {
    "candidate_id": Field(STR, True, True, "the pool candidate"),
    "reason": Field(STR, True, True, "prompt_over_context | over_context | empty_response"),
}

# selections/<target>/<arm>.jsonl: one arm's training set for one target, in the two forms SFT tools read as they
# are: prompt/completion (the exact `Question:/Answer:` text that was scored, split where the loss starts) and chat
# `messages`. Each text appears twice, not four times: a million-example selection stays a few GB.
SELECTION = {
    "prompt": Field(STR, True, True, "the template's prompt part, `Question: {instruction}\\nAnswer:`"),
    "completion": Field(STR, True, True, "the template's response part, ` {response}`"),
    "instruction_id": Field(STR, True, True, "for analysis"),
    "candidate_id": Field(STR, True, True, "for analysis"),
    "source": Field(STR, True, True, "for analysis"),
    "mean_logprob": Field(
        (int, float, type(None)), True, False, "the target's score (null for unscored arms)", LOGPROB
    ),
    "reward": Field((int, float), False, False, "the reward model's score (the reward arm only)", FINITE),
    "messages": Field((list,), True, False, "chat form `[{role, content}]` (TRL, open-instruct, LLaMA-Factory)"),
    "task": TRAIN["task"],
}

# evaluate/<target>/<arm>/<benchmark>.json, field `samples`: one row per test problem.
EVAL_SAMPLE = {
    "doc_id": Field((int,), True, False, "lm-eval's document index"),
    "task": Field(STR, True, True, "the lm-eval task (a group's member task for a group benchmark)"),
    "id": Field(STR, True, True, "the problem id (local: the test id; else <task>:<doc_id>)"),
    "target": Field(STR, True, False, "the reference answer"),
    "output": Field(STR, True, False, "the model's generation"),
    "extracted": Field(STR, True, False, "the answer lm-eval's filter took from it"),
    "correct": Field(NUM, True, False, "1.0 or 0.0 (AlpacaEval 2: the judge's soft win, in [0, 1])"),
}


def markdown(spec) -> str:
    """The spec as the markdown table docs/data_contract.md shows (a test keeps the two identical)."""
    names = {str: "string", int: "int", float: "float", bool: "bool", dict: "object", type(None): "null"}
    lines = ["| field | type | required | meaning |", "|---|---|---|---|"]
    for name, f in spec.items():
        types = " \\| ".join(names.get(t, t.__name__) for t in f.types)
        if f.bounds is not None:
            types += (", finite" if float in f.types else "") + f", {describe_bounds(f.bounds)}"
        need = ("yes, non-empty" if f.non_empty else "yes") if f.required else "no"
        doc = f.doc.replace("|", "\\|")
        lines.append(f"| `{name}` | {types} | {need} | {doc} |")
    return "\n".join(lines)


ALL = {
    "train": TRAIN,
    "train_response": TRAIN_RESPONSE,
    "test": TEST,
    "candidate": CANDIDATE,
    "pool": POOL,
    "scored": SCORED,
    "reward": REWARD,
    "skipped": SKIPPED,
    "selection": SELECTION,
    "eval_sample": EVAL_SAMPLE,
}
