"""`tuned`: a model another experiment fine-tuned, referenced by what it is (experiment, target, arm), not by path.

`models: {ui-llama-grape: {kind: tuned, experiment_name: ultrainteract, target: llama-3.1-8b, arm: grape}}` makes
`results/ultrainteract/sft/llama-3.1-8b/grape` a model of this experiment: it can sample (a source), score (a
target) or be evaluated. The folder must be finished (its `grape_model.json` written by the sft stage); the
manifest records where it is and its content identity, so a retrained model upstream reruns what used it. A model
fine-tuned in *this* experiment cannot sample this experiment's pool (its selection is made from that pool): the
config check refuses it; this experiment already scores with and evaluates its own fine-tunes (grape_rounds, arms).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from grape import layout


def folder(cfg: Mapping) -> Path:
    return Path(layout.root(cfg["experiment_name"])) / layout.model(cfg["target"], cfg["arm"])


def build(cfg: Mapping, out: Path, experiment: str | None = None) -> dict:
    from grape.model_folder import resolve
    from grape.resume import model_identity

    src = folder(cfg)
    if not (src / "grape_model.json").is_file():
        raise ValueError(
            f"model kind tuned: {src} is not a finished fine-tune (no grape_model.json): run experiment "
            f"{cfg['experiment_name']!r} up to it first (snakemake {src} --config experiment=...)"
        )
    try:
        resolve(src)
    except ValueError as err:  # a malformed manifest stops here, naming the file
        raise ValueError(f"{src / 'grape_model.json'}: not JSON ({err})") from None
    return {"path": str(src.resolve()), "revision": None, "identity": model_identity(str(src))}
