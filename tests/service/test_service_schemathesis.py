"""Schemathesis against the served OpenAPI document of a real server: no 500s, answers as documented."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from live_server import ROOT, LiveServer

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 30
MAX_TIME_S = 50
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,"
          "response_headers_conformance,negative_data_rejection,allow_header_conformance,unsupported_method")


def st_binary() -> str:
    found = shutil.which("st", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("schemathesis is not installed: run scripts/setup.sh (it is pinned in the dev extra)")
    return found


def graded_submission(server: LiveServer, token: str) -> str:
    """A real graded submission, so the per-submission operations get past 404 to their own logic."""
    code = (ROOT / "tests" / "solutions" / "mlp" / "correct_vectorized.py").read_text()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        sid = client.post("/v1/submissions", json={"problem": "mlp", "code": code}, headers=headers).json()["id"]
        deadline = time.monotonic() + 120
        while client.get(f"/v1/submissions/{sid}", headers=headers).json()["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline, "the seed submission was not graded in time"
            time.sleep(0.2)
    return sid  # type: ignore[no-any-return]


@pytest.mark.parametrize("role", ["admin", "submitter"])
def test_no_server_errors_and_answers_match_the_spec(tmp_path: Path, role: str) -> None:
    # No rate limits: the fuzzer sends more than a token's burst on purpose, and 429s would hide the answers it
    # checks (the limits themselves are tested in tests/service/test_abuse.py).
    server = LiveServer(tmp_path / "data", workers=1, env={"GRADER_RATE_LIMIT_SUBMISSIONS_PER_MIN": "0",
                                                           "GRADER_RATE_LIMIT_REQUESTS_PER_MIN": "0"})
    token = server.token(role, f"fuzz-{role}")
    server.start()
    try:
        sid = graded_submission(server, token)
        # Real ids for the path parameters; everything else is generated.
        (tmp_path / "schemathesis.toml").write_text(f'[parameters]\nproblem_id = "mlp"\nsubmission_id = "{sid}"\n')
        # The admin run would revoke its own token through DELETE /v1/tokens/1 and test nothing after that;
        # revocation has its own test, and the submitter run still sends DELETE (and gets 403).
        exclude = ["--exclude-method", "DELETE"] if role == "admin" else []
        run = subprocess.run(
            [st_binary(), "run", f"{server.url}/openapi.json", "--header", f"Authorization: Bearer {token}",
             "--generation-with-security-parameters", "false", "--checks", CHECKS,
             "--max-examples", str(MAX_EXAMPLES), "--max-time", str(MAX_TIME_S), "--seed", "20261123",
             "--generation-database", "none", "--workers", "1", "--no-color", *exclude,
             "--report", "junit", "--report-junit-path", str(tmp_path / "schemathesis.xml")],
            cwd=tmp_path, capture_output=True, text=True, timeout=MAX_TIME_S + 120)
    finally:
        server.stop()
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / f"schemathesis-{role}.txt").write_text(run.stdout + run.stderr)
    log = server.log_path.read_text()
    (artifacts / f"schemathesis-{role}-server.log").write_text(log)
    # The server's own traceback first: schemathesis only sees "500 Internal Server Error".
    tracebacks = log[log.find("Traceback"):][:6000] if "Traceback" in log else ""
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:] + "\n--- server log ---\n" + tracebacks
    assert "Authentication failed" not in run.stdout or role == "submitter", run.stdout[-3000:]
    assert not tracebacks, tracebacks
