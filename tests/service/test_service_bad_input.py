"""A client's mistake gets a clear 4xx that says what to fix; never a 500."""

from __future__ import annotations

import json

import pytest
from conftest import Tokens, make_settings
from fastapi.testclient import TestClient

from grader.api.app import create_app


def post(client: TestClient, tokens: Tokens, body: object) -> tuple[int, str]:
    r = client.post("/v1/submissions", json=body, headers=Tokens.auth(tokens.submitter))
    return r.status_code, r.json().get("detail", "")


@pytest.mark.parametrize("body, status, words", [
    ({"problem": "nope", "code": "x = 1"}, 404, "known problems: "),
    ({"problem": "mlp", "code": ""}, 400, "solution.py is empty"),
    ({"problem": "mlp", "code": "   \n\t"}, 400, "solution.py is empty"),
    ({"problem": "mlp"}, 400, "no code"),
    ({"problem": "mlp", "code": "x", "files": {"solution.py": "x"}}, 400, "not both"),
    ({"problem": "mlp", "files": {}}, 400, "solution.py is missing"),
    ({"problem": "mlp", "files": {"main.py": "x = 1"}}, 400, "name the main file solution.py"),
    ({"problem": "mlp", "files": {"solution.py": "x", "../evil.py": "x"}}, 400, "no folders, no '..'"),
    ({"problem": "mlp", "files": {"solution.py": "x", "..": "x"}}, 400, "not allowed"),
    ({"problem": "mlp", "files": {"solution.py": "x", "pkg/helpers.py": "x"}}, 400, "not allowed"),
    ({"problem": "mlp", "files": {"solution.py": "x", "C:\\a.py": "x"}}, 400, "not allowed"),
    ({"problem": "mlp", "files": {"solution.py": "x", ".hidden.py": "x"}}, 400, "not allowed"),
    ({"problem": "mlp", "files": {"solution.py": "x", "data.txt": "x"}}, 400, "ending in .py"),
    ({"problem": "mlp", "code": "x = '\x00'"}, 400, "NUL character"),
    ({"problem": "mlp", "code": "x", "callback_url": "file:///etc/passwd"}, 400, "http:// or https://"),
    ({"problem": "mlp", "code": "x", "callback_url": "http://"}, 400, "http:// or https://"),
    ({"problem": "mlp", "code": "x", "metadata": [1, 2]}, 400, "metadata"),
    ({"problem": "mlp", "code": "x", "metadata": {"k": "v" * 20000}}, 400, "the limit is 16384"),
    ({"problem": "mlp", "code": "x", "candidate": "c" * 201}, 400, "at most 200"),
    ({"problem": "mlp", "code": 5}, 400, "code: Input should be a valid string"),
    ({"problem": "mlp", "code": "x", "extra": 1}, 400, "extra: Extra inputs are not permitted"),
    (["mlp", "x"], 400, "must be a JSON object"),
])
def test_bad_json_bodies(client: TestClient, tokens: Tokens, body: object, status: int, words: str) -> None:
    got_status, detail = post(client, tokens, body)
    assert (got_status, words in detail) == (status, True), detail


def test_too_many_files(client: TestClient, tokens: Tokens) -> None:
    limit = client.app.state.settings.max_files  # type: ignore[attr-defined]
    files = {"solution.py": "x = 1"} | {f"m{i}.py": "" for i in range(limit)}
    status, detail = post(client, tokens, {"problem": "mlp", "files": files})
    assert status == 400 and detail == f"too many files: {limit + 1}; the limit is {limit}"


def test_oversized_code_states_the_limit(client: TestClient, tokens: Tokens) -> None:
    limit = client.app.state.settings.max_code_bytes  # type: ignore[attr-defined]
    status, detail = post(client, tokens, {"problem": "mlp", "code": "#" * (limit + 1)})
    assert status == 400 and detail == (f"the code is too large: {limit + 1} bytes; "
                                        f"the limit is {limit} bytes for all files together")
    # Counted in UTF-8 bytes, not characters: 'é' is two bytes.
    status, detail = post(client, tokens, {"problem": "mlp", "code": "é" * (limit // 2 + 1)})
    assert status == 400 and "too large" in detail
    status, _ = post(client, tokens, {"problem": "mlp", "code": "#" * limit})
    assert status == 202


def test_request_body_limit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, max_request_bytes=1000)
    with TestClient(create_app(settings, run_workers=False)) as client:
        tokens = Tokens(client.app.state.store)  # type: ignore[attr-defined]
        status, detail = post(client, tokens, {"problem": "mlp", "code": "#" * 2000})
        assert status == 413 and "the limit is 1000 bytes" in detail


@pytest.mark.parametrize("raw, words", [
    (b'{"problem": "mlp", "code": ', "malformed JSON: Expecting value at line 1 column 28"),
    (b"{'problem': 'mlp'}", "malformed JSON: Expecting property name"),
    (b"", "the request body is empty"),
    (b'{"problem": "mlp", "code": "\xff\xfe"}', "not UTF-8 (invalid byte at offset 28)"),
    (b'{"problem": "mlp", "code": "x = \'\\ud800\'"}', "solution.py is not valid UTF-8 text: unpaired surrogate"),
    (b'{"problem": "mlp", "code": "x", "candidate": "\\udfff"}', "candidate is not valid UTF-8"),
    (b'{"problem": "mlp", "code": "x", "metadata": {"a": ["\\ud800"]}}', "metadata.a[0] is not valid UTF-8"),
])
def test_malformed_and_non_utf8_json(client: TestClient, tokens: Tokens, raw: bytes, words: str) -> None:
    r = client.post("/v1/submissions", content=raw,
                    headers={**Tokens.auth(tokens.submitter), "Content-Type": "application/json"})
    assert r.status_code == 400 and words in r.json()["detail"], r.text


@pytest.mark.parametrize("depth", [40, 900, 100_000])
def test_deeply_nested_json_is_refused_not_a_crash(client: TestClient, tokens: Tokens, depth: int) -> None:
    raw = b'{"problem": "mlp", "code": "x", "metadata": {"a": ' + b"[" * depth + b"]" * depth + b"}}"
    r = client.post("/v1/submissions", content=raw,
                    headers={**Tokens.auth(tokens.submitter), "Content-Type": "application/json"})
    assert r.status_code == 400 and "at most 32 levels" in r.json()["detail"], r.text


def test_unsupported_content_type(client: TestClient, tokens: Tokens) -> None:
    r = client.post("/v1/submissions", content=b"problem=mlp",
                    headers={**Tokens.auth(tokens.submitter), "Content-Type": "text/plain"})
    assert r.status_code == 400 and "application/json or multipart/form-data" in r.json()["detail"]


def test_multipart_upload(client: TestClient, tokens: Tokens) -> None:
    h = Tokens.auth(tokens.submitter)
    r = client.post("/v1/submissions", headers=h,
                    data={"problem": "mlp", "candidate": "ada", "metadata": json.dumps({"round": 2})},
                    files=[("files", ("solution.py", b"from helpers import f\n")),
                           ("files", ("helpers.py", b"def f(): pass\n"))])
    assert r.status_code == 202, r.text
    detail = client.get(f"/v1/submissions/{r.json()['id']}/detail", headers=Tokens.auth(tokens.interviewer)).json()
    assert detail["files"] == {"solution.py": "from helpers import f\n", "helpers.py": "def f(): pass\n"}
    assert detail["submission"]["metadata"] == {"round": 2} and detail["submission"]["candidate"] == "ada"
    r = client.post("/v1/submissions", headers=h, data={"problem": "mlp"},
                    files={"code": ("anything.py", b"x = 1\n")})
    assert r.status_code == 202


@pytest.mark.parametrize("data, files, words", [
    ({"problem": "mlp"}, [("files", ("solution.py", b"x = '\xff'"))], "solution.py is not UTF-8 text"),
    ({"problem": "mlp"}, [("files", ("../x.py", b"x")), ("files", ("solution.py", b"x"))], "no '..'"),
    ({"problem": "mlp"}, [("files", ("solution.py", b"x")), ("files", ("solution.py", b"y"))], "uploaded twice"),
    ({"problem": "mlp", "metadata": "{not json"}, [("code", ("s.py", b"x"))], "malformed JSON"),
    ({"problem": "mlp", "colour": "red"}, [("code", ("s.py", b"x"))], "unknown form fields ['colour']"),
    ({"problem": "mlp"}, [("problem", ("p.txt", b"mlp")), ("code", ("s.py", b"x"))], "problem must be a text field"),
])
def test_bad_multipart(client: TestClient, tokens: Tokens, data: dict, files: list, words: str) -> None:  # type: ignore[type-arg]
    r = client.post("/v1/submissions", headers=Tokens.auth(tokens.submitter), data=data, files=files)
    assert r.status_code == 400 and words in r.json()["detail"], r.text


def test_broken_multipart_boundary(client: TestClient, tokens: Tokens) -> None:
    r = client.post("/v1/submissions", content=b"--xyz\r\nContent-Disposition: form-data; name=\"problem\"\r\n\r\nml",
                    headers={**Tokens.auth(tokens.submitter), "Content-Type": "multipart/form-data; boundary=xyz"})
    assert 400 <= r.status_code < 500, r.text


def test_bad_idempotency_key(client: TestClient, tokens: Tokens) -> None:
    r = client.post("/v1/submissions", json={"problem": "mlp", "code": "x"},
                    headers={**Tokens.auth(tokens.submitter), "Idempotency-Key": "k" * 201})
    assert r.status_code == 400 and "Idempotency-Key must be 1 to 200" in r.json()["detail"]


def test_notes_and_paths_reject_junk(client: TestClient, tokens: Tokens) -> None:
    h = Tokens.auth(tokens.interviewer)
    assert client.get("/v1/submissions/" + "x" * 500, headers=h).status_code == 404
    r = client.post("/v1/submissions/abc/notes", content=b"{oops", headers={**h, "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["detail"].startswith("malformed JSON")
    r = client.post("/v1/submissions/abc/notes", json={"text": ""}, headers=h)
    assert r.status_code == 422 and "text" in r.json()["detail"]
    assert client.post("/v1/submissions/abc/notes", json={"text": "hi"}, headers=h).status_code == 404
    assert client.get("/v1/submissions", params={"limit": 0}, headers=h).status_code == 422
    r = client.get("/v1/submissions", params={"created_after": "yesterday"}, headers=h)
    assert r.status_code == 400 and "ISO 8601" in r.json()["detail"]
    assert client.get("/v1/submissions", params={"created_before": "0.5"}, headers=h).status_code == 400
    r = client.get("/v1/problems", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and "Bearer" in r.json()["detail"]


def test_callback_hosts_can_be_fenced(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, webhook_allowed_hosts=["ci.example.com"])
    with TestClient(create_app(settings, run_workers=False)) as client:
        tokens = Tokens(client.app.state.store)  # type: ignore[attr-defined]
        status, detail = post(client, tokens, {"problem": "mlp", "code": "x",
                                               "callback_url": "http://169.254.169.254/latest"})
        assert status == 400 and "allowed hosts: ci.example.com" in detail
        status, _ = post(client, tokens, {"problem": "mlp", "code": "x", "callback_url": "https://CI.example.com/h"})
        assert status == 202


@pytest.mark.parametrize("url, kind", [
    ("http://127.0.0.1:8000/hook", "loopback"), ("http://[::1]/hook", "loopback"),
    ("http://10.0.0.5/hook", "private"), ("http://192.168.1.1/hook", "private"),
    ("http://169.254.169.254/latest/meta-data", "link-local"), ("http://100.64.0.1/", "shared"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"), ("http://0.0.0.0/", "unspecified"),
    ("http://[fd00:ec2::254]/", "private"),
])
def test_callbacks_to_the_services_neighbours_are_refused_by_default(tmp_path, url, kind) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, webhook_allowed_networks=[])
    with TestClient(create_app(settings, run_workers=False)) as client:
        tokens = Tokens(client.app.state.store)  # type: ignore[attr-defined]
        status, detail = post(client, tokens, {"problem": "mlp", "code": "x", "callback_url": url})
        assert status == 400 and kind in detail and "GRADER_WEBHOOK_ALLOWED_NETWORKS" in detail, detail


def test_names_are_checked_on_the_resolved_address_at_delivery() -> None:
    """A name is accepted at submission (DNS may change); at delivery it resolves, and the vetted address is called."""
    from grader.service import netguard

    with pytest.raises(netguard.Refused, match="loopback"):
        netguard.resolve_for_delivery("http://localhost:9/hook", [])
    url, host, sni = netguard.resolve_for_delivery("http://localhost:9/hook", netguard.parse_networks(["127.0.0.0/8"]))
    assert url == "http://127.0.0.1:9/hook" and host == "localhost:9" and sni == "localhost"
    url, host, sni = netguard.resolve_for_delivery("https://93.184.216.34/x?q=1", [])
    assert url == "https://93.184.216.34/x?q=1" and sni == "93.184.216.34"


def test_file_names_are_matched_whole(client, tokens) -> None:  # type: ignore[no-untyped-def]
    for name in ("helpers.py\n", "helpers.py\nx", "solution.py\n"):
        status, detail = post(client, tokens, {"problem": "mlp", "files": {"solution.py": "x = 1", name: "y = 2"}})
        assert status == 400 and "is not allowed" in detail, (name, detail)


def test_a_token_name_must_be_printable_text(client, tokens) -> None:  # type: ignore[no-untyped-def]
    h = {**Tokens.auth(tokens.admin), "Content-Type": "application/json"}
    r = client.post("/v1/tokens", content=b'{"role": "submitter", "name": "a\\u0000b"}', headers=h)
    assert r.status_code == 400 and "printable" in r.json()["detail"], r.text
    # An unpaired surrogate is refused while the body is parsed, before the name rule is reached.
    r = client.post("/v1/tokens", content=b'{"role": "submitter", "name": "a\\ud800"}', headers=h)
    assert r.status_code == 422 and "unicode" in r.json()["detail"], r.text
