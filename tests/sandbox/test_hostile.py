"""Hostile submissions against each real sandbox backend: contained, reported, the host untouched.

Each case is the correct reference solution with one hostile piece added, so
the other tests of the same submission show that grading went on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from grader.config import Settings
from grader.engine.report import Report
from tests.conftest import ROOT
from tests.grading import backend_named, grade_submission

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("sandbox_backend")]

BASE = (ROOT / "reference" / "mlp.py").read_text().replace("from __future__ import annotations\n", "")
FAST = Settings(test_timeout_cap_s=4, import_timeout_cap_s=4)


def grade(extra: str, prefix: str = "", settings: Settings = FAST) -> Report:
    report = grade_submission("mlp", {"solution.py": prefix + BASE + "\n\n" + extra}, settings=settings)
    assert report.environment.isolation_weaker == []  # never passes on a sandbox weaker than designed
    return report


def statuses(report: Report) -> dict[str, str]:
    return {t.id: t.status for t in report.tests}


def others_pass(report: Report, broken: set[str]) -> None:
    """Every test not in `broken` passed. train_mlp calls sgd_step, so it breaks with it."""
    if "sgd_step" in broken:
        broken = broken | {"train_mlp"}
    bad = {t.id: (t.status, t.message) for t in report.tests if t.id not in broken and t.status != "passed"}
    assert not bad, bad
    assert report.status == "graded"


def sandbox_processes() -> list[str]:
    """Processes still alive in a cgroup of a sandbox this test process started (none may be, after grading).

    Scoped by cgroup rather than by uid: other graders on the machine run sandboxes of their own.
    """
    mine = f"/dl-grader/s{os.getpid()}-"
    alive = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if mine in (proc / "cgroup").read_text():
                    alive.append(f"{proc.name} {(proc / 'comm').read_text().strip()}")
            except OSError:
                pass
    return alive


@pytest.fixture(autouse=True)
def host_untouched(sandbox_backend: str):
    yield
    if sandbox_backend == "docker":
        # every container a submission used is removed; only the warm pool's unused ones wait
        assert backend_named("docker").in_use() == []  # type: ignore[attr-defined]
        return
    deadline = time.monotonic() + 5
    while sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sandbox_processes() == []
    for controller in ("pids", "memory", "cpu", "cpuacct"):
        leftover = list(Path(f"/sys/fs/cgroup/{controller}/dl-grader").glob(f"s{os.getpid()}-*"))
        assert leftover == [], controller


def test_infinite_loop_costs_only_its_test() -> None:
    report = grade("def sgd_step(params, grads, lr):\n    while True:\n        pass\n")
    assert statuses(report)["sgd_step"] == "timeout"
    assert "did not return" in next(t for t in report.tests if t.id == "sgd_step").message
    others_pass(report, {"sgd_step"})


def test_sleep_at_import_marks_every_test_and_stops() -> None:
    started = time.monotonic()
    report = grade("", prefix="import time\ntime.sleep(1000)\n")
    assert time.monotonic() - started < 30
    assert report.score == 0 and report.status == "graded"
    assert all(t.status == "error" and "did not finish within" in t.message for t in report.tests)


def test_exit_at_import() -> None:
    report = grade("", prefix="import os\nos._exit(0)\n")
    assert report.score == 0
    assert all("ended the sandbox" in t.message for t in report.tests)
    report = grade("", prefix="import sys\nsys.exit(3)\n")
    assert all("sys.exit(3)" in t.message for t in report.tests)


def test_fork_bomb_is_capped_and_killed() -> None:
    report = grade("import os\ndef sgd_step(params, grads, lr):\n    while True:\n        try:\n"
                   "            os.fork()\n        except OSError:\n            pass\n")
    assert statuses(report)["sgd_step"] in ("timeout", "error")
    others_pass(report, {"sgd_step"})


def test_thread_bomb_is_capped() -> None:
    report = grade("import threading, time\ndef sgd_step(params, grads, lr):\n    while True:\n"
                   "        threading.Thread(target=time.sleep, args=(100,), daemon=True).start()\n")
    result = next(t for t in report.tests if t.id == "sgd_step")
    assert result.status in ("error", "timeout")
    others_pass(report, {"sgd_step"})


def test_memory_bomb_is_killed_and_named() -> None:
    report = grade("def sgd_step(params, grads, lr):\n    hog = []\n    while True:\n"
                   "        hog.append(bytearray(50 * 2**20))\n")
    result = next(t for t in report.tests if t.id == "sgd_step")
    assert result.status in ("error", "timeout")
    assert "memory" in result.message.lower()
    others_pass(report, {"sgd_step"})


def test_a_gigabyte_of_stdout_is_capped() -> None:
    report = grade("import sys\ndef sgd_step(params, grads, lr):\n    chunk = 'x' * 2**20\n"
                   "    for _ in range(1024):\n        sys.stdout.write(chunk)\n"
                   "    for k in params:\n        params[k] -= lr * grads[k]\n",
                   settings=Settings(test_timeout_cap_s=30, import_timeout_cap_s=4))
    assert report.output.truncated
    assert len(report.output.text) <= 64 * 1024
    assert report.output.bytes_total >= 2**30 or statuses(report)["sgd_step"] == "timeout"
    others_pass(report, {"sgd_step"})


def test_disk_fill_stays_in_the_private_tmp() -> None:
    report = grade("def sgd_step(params, grads, lr):\n    with open('/tmp/fill', 'wb') as fh:\n"
                   "        while True:\n            fh.write(b'0' * 2**20)\n")
    result = next(t for t in report.tests if t.id == "sgd_step")
    assert result.status == "error"
    assert "File too large" in result.message or "No space" in result.message
    others_pass(report, {"sgd_step"})


def test_segfault_costs_only_its_test() -> None:
    report = grade("import ctypes\ndef sgd_step(params, grads, lr):\n    ctypes.string_at(0)\n")
    result = next(t for t in report.tests if t.id == "sgd_step")
    assert result.status == "error" and "SIGSEGV" in result.message
    others_pass(report, {"sgd_step"})


def test_deep_recursion() -> None:
    report = grade("import sys\nsys.setrecursionlimit(10**7)\n"
                   "def sgd_step(params, grads, lr):\n    def down(n):\n        return down(n + 1) + 1\n"
                   "    return down(0)\n")
    assert statuses(report)["sgd_step"] in ("error", "timeout")
    others_pass(report, {"sgd_step"})


def test_killing_the_parent_and_every_process(sandbox_backend: str) -> None:
    report = grade("import os, signal\ndef sgd_step(params, grads, lr):\n    os.kill(os.getppid(), signal.SIGKILL)\n"
                   "def softmax_cross_entropy(logits, y):\n    os.kill(-1, signal.SIGKILL)\n")
    if sandbox_backend == "local":
        assert statuses(report)["sgd_step"] == "error"  # the runner died with its parent
    else:
        # the parent is the container's init, which the kernel does not let its own namespace kill:
        # the call returns None, a wrong answer, and the container goes on
        assert statuses(report)["sgd_step"] == "failed"
    # kill(-1) signals every process it may except itself, so the function returns None: a wrong answer
    assert statuses(report)["softmax_loss"] in ("failed", "error")
    others_pass(report, {"sgd_step", "softmax_loss", "softmax_stability", "softmax_gradcheck", "net_loss",
                         "net_grads", "net_gradcheck"})


def test_background_process_is_killed_and_reported() -> None:
    report = grade("import os, time\n_orig_sgd = sgd_step\ndef sgd_step(params, grads, lr):\n"
                   "    if os.fork() == 0:\n        time.sleep(1000)\n        os._exit(0)\n"
                   "    return _orig_sgd(params, grads, lr)\n")
    # train_mlp calls sgd_step hundreds of times: the process cap stops the forks there
    others_pass(report, {"train_mlp"})
    assert any(f.kind == "stray-process" and "sgd_step" in f.message for f in report.findings)


def test_monkeypatching_numpy_changes_nothing_on_the_host() -> None:
    report = grade("import numpy as np\nnp.allclose = lambda *a, **k: True\n"
                   "np.testing.assert_allclose = lambda *a, **k: None\nnp.array_equal = lambda *a, **k: True\n"
                   "def sgd_step(params, grads, lr):\n    return None\n")
    assert statuses(report)["sgd_step"] == "failed"
    others_pass(report, {"sgd_step"})


def test_printing_a_fake_report_does_not_reach_stdout(tmp_path: Path) -> None:
    fake = json.dumps({"problem": {"id": "mlp", "version": "1.0.0"}, "status": "graded", "score": 100})
    path = tmp_path / "solution.py"
    path.write_text(f"print({fake!r})\nimport sys\nsys.stdout.write({fake!r})\n"
                    "def affine_forward(x, w, b):\n    print('PASS ' * 10)\n    raise NotImplementedError\n")
    proc = subprocess.run([sys.executable, "-m", "grader.cli", "grade", "mlp", str(path), "--format", "json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # exactly one JSON document: ours
    assert report["score"] == 0
    assert fake in report["output"]["text"]


def test_hostile_return_objects_are_never_trusted() -> None:
    hostile = '''
import os
class Liar:
    def __array__(self, *a, **k):
        import numpy
        return numpy.zeros(3)
    def __eq__(self, other):
        return True
    def __reduce__(self):
        return (os.system, ("touch /tmp/pwned-by-reduce",))
    def __len__(self):
        return 2
    def __iter__(self):
        return iter([self, self])
class Arr(np.ndarray):
    def __eq__(self, other):
        return True
def relu_forward(x):
    return Liar(), None
def affine_forward(x, w, b):
    out = (x.reshape(x.shape[0], -1) @ w + b).view(Arr)
    return out, None
def softmax_cross_entropy(logits, y):
    return Liar()
'''
    report = grade(hostile)
    for test_id in ("relu_forward", "affine_forward", "softmax_loss"):
        result = next(t for t in report.tests if t.id == test_id)
        assert result.status in ("failed", "error"), test_id
    assert "object" in next(t for t in report.tests if t.id == "relu_forward").message
    assert not Path("/tmp/pwned-by-reduce").exists()


def test_syntax_error_names_the_line() -> None:
    report = grade_submission("mlp", {"solution.py": "import numpy as np\n\ndef affine_forward(x, w, b)\n    pass\n"})
    assert report.score == 0
    assert report.findings[0].kind == "syntax" and report.findings[0].line == 3
    assert all("line 3" in t.message for t in report.tests)


def test_missing_functions_are_named_per_test() -> None:
    only_relu = "import numpy as np\n" + "\n".join(
        line for line in BASE.split("\ndef affine_forward")[0].splitlines() if line.startswith("import")) + '''
def relu_forward(x):
    return np.maximum(x, 0), x
def relu_backward(dout, cache):
    return dout * (cache > 0)
'''
    report = grade_submission("mlp", {"solution.py": only_relu}, settings=FAST)
    by_id = {t.id: t for t in report.tests}
    assert by_id["relu_forward"].status == "passed" and by_id["relu_backward"].status == "passed"
    assert "does not define `affine_forward`" in by_id["affine_forward"].message
    assert "does not define `softmax_cross_entropy`" in by_id["softmax_loss"].message
    assert "does not define `TwoLayerNet`" in by_id["net_scores"].message
    assert "does not define `train_mlp`" in by_id["train_mlp"].message


PROBE = '''
import os, socket
def probe(port):
    found = {}
    for path in ("{root}/reference/mlp.py", "{root}/problems/mlp/plan.py", "/root", "/etc/shadow",
                 "/work", "/proc/1/environ"):
        try:
            with open(path, "rb") as fh:
                found[path] = "read"
        except OSError as exc:
            found[path] = type(exc).__name__
    found["environ"] = sorted(os.environ)
    found["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    found["uid"] = os.getuid()
    for target in ("/usr/evil", "/opt/site/evil", "/evil", "{root}/evil"):
        try:
            open(target, "w").write("x")
            found[target] = "written"
        except OSError as exc:
            found[target] = type(exc).__name__
    for host in ("127.0.0.1", "localhost"):
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect((host, port))
            found["net-" + host] = "connected"
        except OSError as exc:
            found["net-" + host] = type(exc).__name__
        finally:
            s.close()
    try:
        socket.getaddrinfo("pypi.org", 443)
        found["dns"] = "resolved"
    except OSError as exc:
        found["dns"] = type(exc).__name__
    return found
'''


def test_no_access_to_grader_files_environment_network_or_host_processes() -> None:
    from grader.engine.catalog import get_problem

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    connections: list[object] = []

    def accept() -> None:
        try:
            connections.append(listener.accept())
        except OSError:
            pass

    acceptor = threading.Thread(target=accept)
    acceptor.start()
    os.environ["GRADER_PROBE_SECRET"] = "s3cret"
    session = backend_named().start(get_problem("mlp").sandbox)
    try:
        assert session.load({"solution.py": PROBE.replace("{root}", str(ROOT))}, "solution.py", 10).ok
        reply = session.call({"fn": "probe"}, (listener.getsockname()[1],), timeout_s=30)
    finally:
        session.close()
        del os.environ["GRADER_PROBE_SECRET"]
    acceptor.join()
    listener.close()
    assert reply.ok, reply.error
    found = reply.value
    for path in (f"{ROOT}/reference/mlp.py", f"{ROOT}/problems/mlp/plan.py", "/etc/shadow", "/work"):
        assert found[path] in ("FileNotFoundError", "PermissionError", "IsADirectoryError"), (path, found[path])
    # the sandbox sees two processes: its own init (bwrap's, or the container's) and the runner
    assert found["/proc/1/environ"] != "read" or (len(found["pids"]) == 2 and 1 in found["pids"])
    assert "GRADER_PROBE_SECRET" not in found["environ"]
    assert len(found["pids"]) <= 2 and 1 in found["pids"], "sees host processes"
    assert found["uid"] >= 100_000
    assert all(found[t] != "written" for t in ("/usr/evil", "/opt/site/evil", "/evil", f"{ROOT}/evil"))
    assert not (ROOT / "evil").exists()
    assert found["net-127.0.0.1"] != "connected" and found["net-localhost"] != "connected"
    assert found["dns"] != "resolved"
    assert connections == []
