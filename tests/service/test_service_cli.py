"""`grader tokens ...` and `grader serve` argument handling, run as a user would (subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from live_server import ROOT

from grader.config import Settings
from grader.service.auth import authenticate
from grader.store.db import open_store


def grader(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "grader.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def test_tokens_create_prints_a_working_token_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    made = grader("tokens", "create", "--role", "interviewer", "--name", "ivy", "--data-dir", str(data))
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("grd_") and len(token.splitlines()) == 1
    assert "cannot be shown again" in made.stderr
    principal = authenticate(open_store(Settings(data_dir=data)), token)
    assert (principal.name, principal.role) == ("ivy", "interviewer")
    listed = grader("tokens", "list", "--data-dir", str(data))
    assert "ivy" in listed.stdout and token not in listed.stdout and token[:8] in listed.stdout
    revoked = grader("tokens", "revoke", str(principal.token_id), "--data-dir", str(data))
    assert revoked.returncode == 0 and "revoked" in grader("tokens", "list", "--data-dir", str(data)).stdout


def test_usage_errors_exit_2_with_the_reason(tmp_path: Path) -> None:
    bad_role = grader("tokens", "create", "--role", "root", "--data-dir", str(tmp_path))
    assert bad_role.returncode == 2 and "invalid choice: 'root'" in bad_role.stderr
    placeholder = grader("serve", "--data-dir", str(tmp_path), env={"GRADER_ENVIRONMENT": "production"})
    assert placeholder.returncode == 2 and "GRADER_WEBHOOK_SECRET is a placeholder" in placeholder.stderr
    workers = grader("serve", "--data-dir", str(tmp_path), "--workers", "-1")  # 0 is valid: the API alone
    assert workers.returncode == 2 and "workers" in workers.stderr
    unknown = grader("tokens", "revoke", "999", "--data-dir", str(tmp_path))
    assert unknown.returncode == 2 and "no token with id 999; see `grader tokens list`" in unknown.stderr
