"""A `grape` job started by Snakemake stops when that Snakemake is gone.

Snakemake runs each job as `bash -c 'grape <stage> ...'`. When Snakemake itself is killed (SIGKILL, an OOM kill, a
closed terminal with no hangup reaching the job), the shell and its `grape` child are re-parented and go on for
hours, holding cores, GPUs and the checkpoint files a rerun would resume from. So `grape` looks up its nearest
ancestor that is a Snakemake process and, while it runs, checks every few seconds that this very process (same pid,
same start time) still exists; once it does not, the job says so on stderr and terminates itself (SIGTERM, so its
checkpoint stays as consistent as after any kill, and the rerun resumes from it). A `grape` run by hand, or under a
Snakemake that keeps running (a Slurm job step's own), is unaffected.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks) of a process, or None when it is gone: ended, or killed and not yet
    reaped (a zombie, state Z or X, under a parent that does not reap)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else (int(fields[1]), int(fields[19]))


def _is_snakemake(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(os.path.basename(a.decode(errors="replace")) in ("snakemake", "snakemake/__main__.py") or a == b"snakemake"
               for a in argv[:4])  # fmt: skip


def snakemake_ancestor(levels: int = 6) -> tuple[int, int] | None:
    """(pid, start time) of the nearest Snakemake process among this process's ancestors, if any."""
    pid = os.getppid()
    for _ in range(levels):
        if pid <= 1:
            return None
        st = _stat(pid)
        if st is None:
            return None
        if _is_snakemake(pid):
            return pid, st[1]
        pid = st[0]
    return None


def start(poll_s: float = 2.0) -> bool:
    """Watch the Snakemake that started this job (a daemon thread); True when there is one to watch."""
    found = snakemake_ancestor()
    if found is None or sys.platform != "linux":
        return False
    pid, started = found

    def watch():
        stop = threading.Event()
        while not stop.wait(poll_s):
            st = _stat(pid)
            if st is None or st[1] != started:
                print(
                    f"grape: the snakemake that started this job (pid {pid}) is gone; stopping (a rerun resumes from "
                    "this job's checkpoint)",
                    file=sys.stderr,
                    flush=True,
                )
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=watch, name="grape-watchdog", daemon=True).start()
    return True
