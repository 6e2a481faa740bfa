"""`hf`: a hub id or local path, left where it is; the manifest records where to load it from (at the pinned
revision). Jobs run offline, so a hub model must already be in the cache: checked here, before any job loads it."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping


def build(cfg: Mapping, out: Path, experiment: str | None = None) -> dict:
    from grape import hub

    path, revision = cfg["path"], cfg.get("revision")
    if not Path(path).exists() and not hub.model_available(path, revision):
        raise ValueError(hub.missing_message("model", path, revision, experiment))
    return {"path": path, "revision": revision}
