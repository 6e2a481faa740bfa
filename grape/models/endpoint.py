"""`endpoint`: a model behind an OpenAI-compatible server (`sample.backend: openai`); nothing local (the key is read
from the environment at request time, never written)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping


def build(cfg: Mapping, out: Path, experiment: str | None = None) -> dict:
    return {"endpoint": dict(cfg["endpoint"])}
