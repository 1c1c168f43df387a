"""One validation model: a bad file name or text gets the same rule and the same message via the API (JSON and
multipart), the pages and the CLI, because every way in validates with grader.engine.files."""

from __future__ import annotations

import html
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Tokens
from fastapi.testclient import TestClient
from live_server import ROOT

from grader.engine.files import decode_text, name_problem, text_problem
from grader.errors import InvalidRequest

GOOD = "def affine_forward(x, w, b):\n    return x @ w + b\n"


def cli_grade(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "grader.cli", "grade", "mlp", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))


def api_json(client: TestClient, tokens: Tokens, body: dict[str, object]) -> str:
    r = client.post("/v1/submissions", json={"problem": "mlp", **body}, headers=Tokens.auth(tokens.submitter))
    assert r.status_code == 400, r.text
    return str(r.json()["detail"])


def api_upload(client: TestClient, tokens: Tokens, files: list[tuple[str, bytes]]) -> str:
    r = client.post("/v1/submissions", data={"problem": "mlp"}, headers=Tokens.auth(tokens.submitter),
                    files=[("files", (name, data)) for name, data in files])
    assert r.status_code == 400, r.text
    return str(r.json()["detail"])


@pytest.mark.parametrize("name", ["my-helper.py", "1st.py", "helpers.txt.py.bak", "héllo.py"])
def test_a_bad_file_name_is_one_message_everywhere(client: TestClient, tokens: Tokens, tmp_path: Path,
                                                   name: str) -> None:
    expected = name_problem(name)
    assert expected is not None and "plain module name" in expected
    assert api_json(client, tokens, {"files": {"solution.py": GOOD, name: "X = 1\n"}}) == expected
    assert api_upload(client, tokens, [("solution.py", GOOD.encode()), (name, b"X = 1\n")]) == expected
    folder = tmp_path / "sub"
    folder.mkdir()
    (folder / "solution.py").write_text(GOOD)
    (folder / name).write_text("X = 1\n")
    if not name.endswith(".py"):
        return  # the folder reader takes only .py files; the others are not part of a submission
    proc = cli_grade(folder)
    assert (proc.returncode, proc.stderr) == (2, f"grader: {expected}\n")
    assert proc.stdout == ""


@pytest.mark.parametrize("text", ["x = '\x00'\n", "\x00"])
def test_a_nul_in_the_code_is_one_message_everywhere(client: TestClient, tokens: Tokens, tmp_path: Path,
                                                     text: str) -> None:
    expected = text_problem(text, "solution.py")
    assert expected == "solution.py contains a NUL character: send plain text"
    assert api_json(client, tokens, {"code": text}) == expected
    assert api_json(client, tokens, {"files": {"solution.py": text}}) == expected
    assert api_upload(client, tokens, [("solution.py", text.encode())]) == expected
    (tmp_path / "solution.py").write_text(text)
    proc = cli_grade(tmp_path / "solution.py")
    assert (proc.returncode, proc.stderr) == (2, f"grader: {expected}\n")


def test_a_lone_surrogate_is_refused_by_the_same_rule(client: TestClient, tokens: Tokens) -> None:
    # JSON can carry an unpaired surrogate as an escape; no file on disk can (the CLI reads UTF-8 bytes).
    expected = text_problem("x = '\ud800'", "solution.py")
    assert expected is not None and "unpaired surrogate" in expected
    raw = b'{"problem": "mlp", "files": {"solution.py": "x = \'\\ud800\'"}}'
    r = client.post("/v1/submissions", content=raw, headers={**Tokens.auth(tokens.submitter),
                                                              "Content-Type": "application/json"})
    assert (r.status_code, r.json()["detail"]) == (400, expected)


def test_bytes_that_are_not_utf8_are_one_message_for_uploads_and_files(client: TestClient, tokens: Tokens,
                                                                        tmp_path: Path) -> None:
    data = b"x = '\xff'\n"
    with pytest.raises(InvalidRequest) as upload_rule:
        decode_text(data, "solution.py")
    assert api_upload(client, tokens, [("solution.py", data)]) == upload_rule.value.message
    path = tmp_path / "solution.py"
    path.write_bytes(data)
    with pytest.raises(InvalidRequest) as file_rule:
        decode_text(data, str(path))
    proc = cli_grade(path)
    assert (proc.returncode, proc.stderr) == (2, f"grader: {file_rule.value.message}\n")
    assert "is not UTF-8 text (invalid byte at offset 5); save it as UTF-8" in file_rule.value.message


@pytest.mark.parametrize("text, what", [("looks fine\x00", "the note"), ("ok \x00", "the reason")])
def test_a_nul_in_a_note_or_reason_is_one_message_in_the_api_and_the_pages(client: TestClient, tokens: Tokens,
                                                                           text: str, what: str) -> None:
    r = client.post("/v1/submissions", json={"problem": "mlp", "code": "affine_forward\n"},
                    headers=Tokens.auth(tokens.submitter))
    sid = r.json()["id"]
    expected = text_problem(text, what)
    assert expected == f"{what} contains a NUL character: send plain text"
    ih = Tokens.auth(tokens.interviewer)
    if what == "the note":
        api = client.post(f"/v1/submissions/{sid}/notes", json={"text": text}, headers=ih)
        form = {"text": text}
        path = f"/ui/submissions/{sid}/notes"
    else:
        api = client.post(f"/v1/submissions/{sid}/overrides", json={"test_id": "affine_forward", "points": 1,
                                                                    "reason": text}, headers=ih)
        form = {"test_id": "affine_forward", "points": "1", "reason": text}
        path = f"/ui/submissions/{sid}/overrides"
    assert (api.status_code, api.json()["detail"]) == (400, expected)
    assert client.post("/ui/login", data={"token": tokens.interviewer}, follow_redirects=False).status_code == 303
    page = client.post(path, data=form, follow_redirects=False)
    assert page.status_code == 400 and html.escape(expected) in page.text


def test_the_single_value_types_carry_the_same_rule() -> None:
    from pydantic import BaseModel, ValidationError

    from grader.engine.files import FileName, FileText, describe_errors

    class Upload(BaseModel):
        name: FileName
        text: FileText

    assert Upload(name="helpers.py", text="X = 1\n").name == "helpers.py"
    with pytest.raises(ValidationError) as bad:
        Upload(name="my-helper.py", text="x\x00")
    # A field names its own subject: the field's name stands where a file's name would.
    expected = [name_problem("my-helper.py"), text_problem("x\x00", "text")]
    assert describe_errors(bad.value.errors()) == "; ".join(str(m) for m in expected)
    assert expected[1] == "text contains a NUL character: send plain text"
