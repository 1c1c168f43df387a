"""The CI examples run as written: their grading commands, taken from the YAML, against a real service."""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.client.conftest import CORRECT, WRONG, WRONG_FAILS, Service
from tests.service.live_server import ROOT

pytestmark = pytest.mark.slow

EXAMPLES = ROOT / "examples"


def github_grading_step() -> tuple[str, dict[str, Any]]:
    """The `run` of the workflow's grading step, and the whole workflow."""
    workflow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    steps = workflow["jobs"]["grade"]["steps"]
    (grade,) = [s for s in steps if s.get("id") == "grade"]
    assert set(grade["env"]) == {"GRADER_SERVER", "GRADER_TOKEN"}
    assert all("secrets." in value for value in grade["env"].values())
    # The grader is installed by its own step (skipped here: it is installed already).
    assert any("pip install" in s.get("run", "") for s in steps[:steps.index(grade)])
    return str(grade["run"]), workflow


def gitlab_script() -> tuple[str, dict[str, Any]]:
    """The job's script without its `pip install` line, and the whole file."""
    config = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text())
    lines = config["grade"]["script"]
    assert any(line.startswith("pip install") for line in lines)
    return "\n".join(line for line in lines if not line.startswith("pip install")), config


def run_step(script: str, service: Service, workdir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # GitHub runs `run:` with `bash -e -o pipefail`; GitLab stops a job at the first failing line.
    return subprocess.run(["bash", "--noprofile", "--norc", "-e", "-o", "pipefail", "-c", script],
                          cwd=workdir, env=service.env(**env), capture_output=True, text=True, timeout=600)


def candidate_repo(tmp_path: Path, solution: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "solution").mkdir(parents=True)
    (repo / "solution" / "solution.py").write_text(solution.read_text())
    return repo


def failing_ids(report_xml: Path) -> list[str]:
    """The ids of the failed tests (a testcase's name starts with its test's id)."""
    cases = ET.parse(report_xml).getroot().iter("testcase")
    return sorted(re.findall(r"\w+", c.get("name", ""))[0] for c in cases if c.find("failure") is not None)


def test_the_github_actions_job_passes_a_correct_solution(service: Service, tmp_path: Path) -> None:
    script, workflow = github_grading_step()
    (publish,) = [s for s in workflow["jobs"]["grade"]["steps"] if "action-junit-report" in s.get("uses", "")]
    assert publish["with"]["report_paths"] == "report.xml" and publish["if"] == "always()"
    repo = candidate_repo(tmp_path, CORRECT)
    done = run_step(script, service, repo, GITHUB_REPOSITORY="acme/candidate-ada")
    assert done.returncode == 0, done.stderr
    assert "100/100 points" in done.stdout
    assert (repo / "report.xml").read_text().count("<testcase") == 14 and failing_ids(repo / "report.xml") == []
    report = json.loads((repo / "report.json").read_text())
    assert report["score"] == 100.0
    assert service.rows("SELECT score FROM submissions WHERE candidate = 'acme/candidate-ada'") == [(100.0,)]


def test_the_gitlab_job_fails_a_solution_under_the_passing_score(service: Service, tmp_path: Path) -> None:
    script, config = gitlab_script()
    assert config["grade"]["artifacts"]["reports"]["junit"] == "report.xml"
    assert config["grade"]["artifacts"]["when"] == "always"
    repo = candidate_repo(tmp_path, WRONG)
    done = run_step(script, service, repo, CI_PROJECT_PATH="acme/candidate-bo")
    assert done.returncode == 1, done.stderr  # 71 points, --min-score 80
    assert "score 71 is under --min-score 80" in done.stderr
    assert failing_ids(repo / "report.xml") == sorted(WRONG_FAILS)
    assert service.rows("SELECT score FROM submissions WHERE candidate = 'acme/candidate-bo'") == [(71.0,)]
