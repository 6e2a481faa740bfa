#!/usr/bin/env bash
# Where the paper's GPU time goes, measured on the GPU you have, as it is (~6 min on one H200):
#   1. scoring at Llama-3.1-8B shape, the plain loop vs the packed engine, on an UltraInteract-shaped pool
#      (10 candidates of ~350 tokens) and on short candidates (bench/score.py);
#   2. SFT at Llama-3.2-3B shape with the paper's recipe (full FT, bf16, global batch in examples), TRL's padded
#      micro-batches of 2 examples vs padding-free micro-batches of 8K tokens (bench/sft.py).
# Each table prints tokens/s, TFLOP/s and the fraction of a bf16 matmul peak measured in the same process, the GPU's
# name, and (scoring) how far the engine's scores and picks are from the plain loop's. Weights are random, nothing is
# downloaded; only ratios within one run compare.
#
#   bench/gpu.sh            # one GPU
#   bench/gpu.sh --smoke    # tiny shapes on CPU, in seconds: what CI runs (tests/test_bench_gpu.py)
#
# Needs torch, transformers, trl, datasets, accelerate and this checkout; PYTHON picks the interpreter (default: the
# project's .venv where there is one, else python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [[ "${1:-}" == "--smoke" ]]; then
  dev=cpu
  score=(--random-shape tiny --n-instructions 2 --repeats 1)
  sft=(--random-shape tiny --examples 12 --global-batch 6 --max-length 128 --micro-batch-tokens 256
       --prompt-words 16 --response-words 24)
elif [[ $# -gt 0 ]]; then
  echo "usage: bench/gpu.sh [--smoke]" >&2
  exit 2
else
  dev=cuda
  "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "bench/gpu.sh: no CUDA GPU here (bench/gpu.sh --smoke runs on CPU)")'
  score=(--random-shape llama3.1-8b --n-instructions 48 --repeats 1 --dtype bfloat16)
  # 8 steps of 64 examples (~570 tokens each: prompts ~150, responses log-normal around ~400): ~36K tokens a step
  sft=(--random-shape llama3.2-3b --examples 512 --global-batch 64 --max-length 4096 --micro-batch-tokens 8192
       --prompt-words 100 --response-words 260)
fi

echo "== scoring: UltraInteract-shaped pool (10 candidates per instruction, responses ~350 tokens, tail to 2K)"
"$PY" bench/score.py --device "$dev" --methods plain,engine --ultrainteract "${score[@]}"
if [[ "$dev" == cuda ]]; then  # the smoke test skips the second pool: the same code, CI's time is short
  echo
  echo "== scoring: short candidates (4 per instruction, ~45 tokens)"
  "$PY" bench/score.py --device "$dev" --methods plain,engine "${score[@]}"
fi
echo
echo "== SFT: padded micro-batches of 2 examples vs padding-free micro-batches by tokens"
"$PY" bench/sft.py --device "$dev" "${sft[@]}"
