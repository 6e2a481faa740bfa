"""How `grape sft` cuts each optimizer step into padding-free micro-batches, feeds them to the Trainer, and measures
what every step did (tokens/s, TFLOP/s, MFU in `train_log.json`).

Why a plan of our own. The paper's global batch is 256 *examples* per optimizer step, and a GPU is only busy when a
micro-batch holds many tokens (an H200 ran a 3B model at 7% of its matmul peak with ~1,400-token micro-batches and
2.6x faster with ~5,500: ../shared/research/gpu_h200.md). A micro-batch sized by tokens holds a varying number of
examples, while the Trainer knows one fixed number of micro-batches per step. So the steps are drawn here, as a
seeded RandomSampler would (each epoch shuffled with `seed + epoch`, `global_batch` examples at a time, the last
step of an epoch shorter), and each step is split into exactly `accum x processes` micro-batches:
- by examples (`sft.micro_batch_tokens: null`): `sft.batch_size` consecutive examples each, as before;
- by tokens (`sft.micro_batch_tokens: N`): longest example first into the lightest micro-batch, with `accum` the
  count the heaviest step of the run needs to keep every micro-batch near N tokens (an example longer than N sits
  alone). The global batch keeps its meaning: `global_batch` examples per optimizer step.
A step with fewer examples than micro-batches (the short last step of an epoch) is filled with empty micro-batches
(one padding token, no loss), so the Trainer's accumulation stays aligned with the steps; the loss is TRL's, the
mean over the response tokens of the whole step, whatever the split. The Trainer reads the micro-batches in order
(`train_sampling_strategy: sequential`); accelerate deals them to the processes in turn.

Attention: the collator sends no attention mask, only position ids that restart at 0 per example; transformers
builds the document mask from them for the model's attention (sdpa, eager, flex attention's block mask, flash
attention's varlen lengths), so no example sees another and no total x total mask is built by us.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from typing import Sequence

EMPTY = ()  # a micro-batch with no example: one padding token, no loss


def plan(
    lengths: Sequence[int],
    global_batch: int,
    processes: int,
    epochs: float,
    seed: int,
    examples_per_micro: int | None = None,
    tokens_per_micro: int | None = None,
) -> tuple[list[tuple[int, ...]], int, list[list[int]]]:
    """(micro-batches in the order the Trainer reads them, accumulation steps per process, the examples of each
    optimizer step). Exactly one of `examples_per_micro` / `tokens_per_micro` is set."""
    if (examples_per_micro is None) == (tokens_per_micro is None):
        raise ValueError("set exactly one of examples_per_micro / tokens_per_micro")
    n = len(lengths)
    if n == 0:
        raise ValueError("no examples to train on")
    per_epoch = math.ceil(n / global_batch)
    total = math.ceil(epochs * per_epoch - 1e-9)
    steps: list[list[int]] = []
    epoch = 0
    while len(steps) < total:
        order = list(range(n))
        random.Random(seed + epoch).shuffle(order)
        steps += [order[i : i + global_batch] for i in range(0, n, global_batch)]
        epoch += 1
    steps = steps[:total]
    if examples_per_micro is not None:
        accum = accumulation(global_batch, examples_per_micro, processes)
    else:
        if global_batch < processes:
            raise ValueError(f"sft.global_batch {global_batch} is smaller than the {processes} processes")
        need = max(math.ceil(sum(lengths[i] for i in s) / (tokens_per_micro * processes)) for s in steps)
        accum = max(1, min(need, global_batch // processes))
    bins = accum * processes
    micro: list[tuple[int, ...]] = []
    for s in steps:
        if examples_per_micro is not None:
            parts = [tuple(s[i : i + examples_per_micro]) for i in range(0, len(s), examples_per_micro)]
        else:
            parts = _balance(s, lengths, min(bins, len(s)))
        micro += parts + [EMPTY] * (bins - len(parts))
    return micro, accum, steps


def _balance(step: Sequence[int], lengths: Sequence[int], k: int) -> list[tuple[int, ...]]:
    """`step` into `k` non-empty groups of near-equal tokens: longest first into the lightest (ties: lowest group)."""
    heap = [(0, g) for g in range(k)]
    groups: list[list[int]] = [[] for _ in range(k)]
    for i in sorted(step, key=lambda i: (-lengths[i], i)):
        tokens, g = heapq.heappop(heap)
        groups[g].append(i)
        heapq.heappush(heap, (tokens + lengths[i], g))
    return [tuple(sorted(g)) for g in groups]


def accumulation(global_batch: int, micro_batch: int, processes: int) -> int:
    """Gradient accumulation steps that make `global_batch` from `micro_batch` per process on `processes`."""
    per_step = micro_batch * processes
    if global_batch % per_step:
        fits = [n for n in range(1, global_batch + 1) if global_batch % (micro_batch * n) == 0]
        raise ValueError(
            f"sft.global_batch {global_batch} is not a multiple of sft.batch_size {micro_batch} x {processes} "
            f"processes = {per_step}: no whole number of accumulation steps reaches it; with batch_size "
            f"{micro_batch} use {fits[:8]} processes, or change sft.batch_size / sft.global_batch"
        )
    return global_batch // per_step


def micro_batches(micro: Sequence[tuple[int, ...]]):
    """The Trainer's dataset (TRL takes only a `datasets.Dataset`): row i holds the indices of micro-batch i's
    examples into the tokenized examples, so those are stored once however many epochs the plan spans."""
    from datasets import Dataset, Features, Value
    from datasets import Sequence as Seq

    return Dataset.from_dict(
        {"examples": [list(m) for m in micro]}, features=Features({"examples": Seq(Value("int64"))})
    )


LENGTHS = "grape_lengths"  # the examples' lengths, a plain list beside the tensors, taken off before the model


class PackedCollator:
    """One micro-batch of the plan as one sequence with no padding: input ids concatenated, position ids restarting
    at 0 per example (transformers derives the document mask from them), labels the response tokens and never an
    example's first token. The examples' lengths ride along (`LENGTHS`) for the step meter: counted when the
    micro-batch is trained, not when it is collated (accelerate collates one ahead)."""

    def __init__(self, examples, pad_id: int):
        self.examples, self.pad_id = examples, pad_id

    def __call__(self, items: list[dict]) -> dict:
        import torch

        rows = [self.examples[i] for item in items for i in item["examples"]]
        if not rows:
            ids = torch.tensor([[self.pad_id]])
            empty = {"input_ids": ids, "labels": torch.full_like(ids, -100), "position_ids": torch.zeros_like(ids)}
            return {**empty, LENGTHS: []}
        ids = [torch.as_tensor(r["input_ids"]) for r in rows]
        masks = [torch.as_tensor(r["completion_mask"]).bool() for r in rows]
        labels = torch.cat([torch.where(m, x, -100) for x, m in zip(ids, masks)])
        lengths = [len(x) for x in ids]
        position_ids = torch.cat([torch.arange(n) for n in lengths])
        labels[position_ids == 0] = -100
        batch = {"input_ids": torch.cat(ids)[None], "labels": labels[None], "position_ids": position_ids[None]}
        return {**batch, LENGTHS: lengths}


class Tally:
    """Tokens and the sum of squared example lengths (the attention term of the FLOP count) handed out so far."""

    def __init__(self):
        self.tokens = self.squares = 0

    def add(self, lengths: Sequence[int]) -> None:
        self.tokens += sum(lengths)
        self.squares += sum(n * n for n in lengths)

    def take(self) -> tuple[int, int]:
        out = (self.tokens, self.squares)
        self.tokens = self.squares = 0
        return out


def flops_per_step(n_params: int, layers: int, attn_width: int, tokens: int, squares: int) -> float:
    """Model FLOPs of a training step, the MFU convention: 6 x parameters (input embedding left out) per token for
    the matmuls, forward and backward, plus causal attention: 2 x 2 x width x len^2 / 2 forward per example and
    layer (scores and weighted sum), x3 with the backward. Recomputation under gradient checkpointing is not
    counted (it is overhead, not model work)."""
    return 6.0 * n_params * tokens + 6.0 * layers * attn_width * squares


def model_shape(model) -> tuple[int, int, int]:
    """(parameters without the input embedding, layers, attention width = heads x head dim) of a causal LM."""
    cfg = model.config
    emb = model.get_input_embeddings().weight
    total = sum(p.numel() for p in model.parameters())
    head = model.get_output_embeddings()
    tied = head is not None and head.weight.data_ptr() == emb.data_ptr()
    params = total - (0 if tied else emb.numel())
    heads = getattr(cfg, "num_attention_heads", 1)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return params, cfg.num_hidden_layers, heads * head_dim


def step_meter(
    tally: Tally, shape: tuple[int, int, int], peak: float, processes: int, device: str, planned=None
):  # fmt: skip
    """A TrainerCallback recording each optimizer step: real tokens, seconds, tokens/s, TFLOP/s and MFU against
    `peak` (FLOP/s of a matmul measured in this job, `grape.runtime.matmul_peak`). Tokens: the plan's count for the
    step (`planned`: (tokens, squared lengths) per step, exact on any number of processes), else what this process
    trained x processes (padded batches: exact on one process, an estimate on several)."""
    from transformers import TrainerCallback

    class StepMeter(TrainerCallback):
        def __init__(self):
            self.steps: list[dict] = []
            self.t0 = None

        def _sync(self):
            if device == "cuda":
                import torch

                torch.cuda.synchronize()

        def on_step_begin(self, args, state, control, **kw):
            if self.t0 is None:
                self._sync()
                self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self._sync()
            now = time.perf_counter()
            tokens, squares = tally.take()
            tokens, squares = tokens * processes, squares * processes
            if planned is not None and 0 < state.global_step <= len(planned):
                tokens, squares = planned[state.global_step - 1]
            dt = max(now - self.t0, 1e-9)
            flops = flops_per_step(*shape, tokens, squares)
            self.steps.append(
                {
                    "step": state.global_step,
                    "tokens": tokens,
                    "seconds": round(dt, 4),
                    "tokens_per_s": round(tokens / dt, 1),
                    "tflops": round(flops / dt / 1e12, 4),
                    "mfu": round(flops / dt / peak, 4) if peak else None,
                }
            )
            self.t0 = now

    return StepMeter()


def summary(steps: list[dict], peak: float) -> dict:
    """The steady rate: steps after the first (compilation, allocation, kernel choice) when there are several."""
    steady = steps[1:] if len(steps) > 1 else steps
    if not steady:
        return {}
    seconds = sum(s["seconds"] for s in steady)
    tokens = sum(s["tokens"] for s in steady)
    tflops = sum(s["tflops"] * s["seconds"] for s in steady) / seconds
    return {
        "steady_steps": len(steady),
        "steady_tokens_per_s": round(tokens / seconds, 1),
        "steady_tflops": round(tflops, 4),
        "steady_mfu": round(tflops * 1e12 / peak, 4) if peak else None,
        "matmul_peak_tflops": round(peak / 1e12, 4),
    }


def checkpointing(
    requested, dev: str, shape: tuple[int, int, int], hidden: int, vocab: int, micro_tokens: int, full: bool,
    shards: int, gpu_bytes: int | None,
) -> tuple[bool, str]:  # fmt: skip
    """(gradient checkpointing on?, why). `auto`: off on CPU; on a GPU on only when the step would not fit without
    it: fp32 weights, gradients and AdamW's two moments (16 bytes a parameter for full fine-tuning, 4 for LoRA,
    divided by `shards` under FSDP / ZeRO-3) plus a micro-batch's activations kept for the backward (~34 x hidden
    bytes per token and layer in bf16, Korthikanti et al. 2022, with attention that stores no len x len scores) and
    its logits (bf16, their fp32 log-softmax and its gradient: ~10 x vocab bytes per token), against 80% of the
    GPU's memory. Recomputing the forward costs ~1/3 more compute, so it is worth avoiding when memory allows."""
    if requested != "auto":
        return bool(requested), "asked for in the config"
    if dev != "cuda" or not gpu_bytes:
        return False, "CPU: recomputation would only cost time"
    params, layers, _ = shape
    state = params * (16 if full else 4) / max(1, shards)
    acts = micro_tokens * (34 * hidden * layers + 10 * vocab)
    need, have = state + acts, 0.8 * gpu_bytes
    on = need > have
    return on, (
        f"estimated {need / 2**30:.0f} GiB without it (state {state / 2**30:.0f} + activations of {micro_tokens} "
        f"tokens {acts / 2**30:.0f}) {'>' if on else '<='} 80% of the GPU's {gpu_bytes / 2**30:.0f} GiB"
    )


class LengthsCollator:
    """TRL's padded collator, with each example's real length (its attention mask) riding along (`LENGTHS`)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples):
        batch = self.inner(examples)
        return {**batch, LENGTHS: batch["attention_mask"].sum(-1).tolist()}


def counting(trainer_cls, tally: Tally):
    """`trainer_cls` taking each micro-batch's `LENGTHS` off before the model sees it, into `tally`."""

    class Counting(trainer_cls):
        def training_step(self, model, inputs, *args, **kwargs):
            tally.add(inputs.pop(LENGTHS, []))
            return super().training_step(model, inputs, *args, **kwargs)

    return Counting
