"""Similarity across submissions in the service: fingerprints stored on acceptance (and by migration 0004 for
older submissions), the nearest earlier submissions of the same problem on the API and the pages, for
interviewers only.

The app in process (TestClient, real SQLite file, real migrations, real worker pool, stand-in grader), as in
test_service_api.py; the migration on SQLite and on PostgreSQL, as tests/faults/test_report_checksums.py and
tests/queue/test_migrate_postgres.py test 0003.
"""

from __future__ import annotations

import html
import importlib.util
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from alembic import command
from conftest import Tokens, make_settings, standin_grade, wait_for_status
from fastapi.testclient import TestClient
from live_server import LiveServer
from sqlalchemy import inspect, text

from grader.api.app import create_app
from grader.engine.catalog import get_problem
from grader.engine.similarity import FLAG_THRESHOLD, fingerprint, similarity
from grader.service import similarity as service_similarity
from grader.service import submissions as subs
from grader.service.auth import Principal
from grader.store.db import STORE_DIR, Store, alembic_config, newest_migration, open_store
from tests.service.pg_cluster import PgCluster, running_cluster

SOLUTIONS = Path(__file__).resolve().parents[1] / "solutions" / "mlp"
INTERVIEWER = Principal(token_id=0, name="test", role="interviewer")
# Names of correct_vectorized.py's locals, renamed in the copy (function names stay: the grader calls them).
RENAMES = {"x2d": "flat", "out": "result", "dout": "upstream", "cache": "saved", "dx": "grad_x", "dw": "grad_w",
           "db": "grad_b", "shifted": "centered", "probs": "p", "log_probs": "logp", "loss": "total",
           "dlogits": "g", "N": "batch"}


def solution(name: str) -> str:
    return (SOLUTIONS / f"{name}.py").read_text()


def disguised(source: str) -> str:
    """A copy as a candidate would disguise one: locals renamed, indented by 2, comments, functions reversed."""
    for old, new in RENAMES.items():
        source = re.sub(rf"\b{old}\b", new, source)
    source = re.sub(r"^((?:    )+)", lambda m: "  " * (len(m.group(1)) // 4), source, flags=re.M)
    head, *functions = source.split("\n\n\ndef ")
    body = "\n\n\n".join(f"# my own work\ndef {f.strip()}" for f in reversed(functions))
    return f"{head}\n\n\n{body}\n"


def migration_batch() -> int:
    """Migration 0004's backfill batch size (its module's name is not an identifier: loaded by path)."""
    spec = importlib.util.spec_from_file_location("migration_0004",
                                                  STORE_DIR / "migrations" / "versions" / "0004_fingerprints.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return int(module.BATCH)


def submit(client: TestClient, token: str, code: str, candidate: str | None = None) -> dict:  # type: ignore[type-arg]
    r = client.post("/v1/submissions", json={"problem": "mlp", "code": code, "candidate": candidate},
                    headers=Tokens.auth(token))
    assert r.status_code == 202, r.text
    return r.json()  # type: ignore[no-any-return]


def similar_of(client: TestClient, tokens: Tokens, sid: str) -> dict:  # type: ignore[type-arg]
    r = client.get(f"/v1/submissions/{sid}", headers=Tokens.auth(tokens.interviewer))
    assert r.status_code == 200, r.text
    return r.json()["similarity"]  # type: ignore[no-any-return]


def page(client: TestClient, tokens: Tokens, path: str) -> str:
    r = client.get(path, headers=Tokens.auth(tokens.interviewer))
    assert r.status_code == 200, r.text
    return html.unescape(r.text)


def test_the_disguise_keeps_the_copy_a_working_solution_and_the_engine_scores_it_a_copy() -> None:
    original, copy = solution("correct_vectorized"), disguised(solution("correct_vectorized"))
    compile(copy, "copy.py", "exec")
    assert copy != original and "x2d" not in copy and "  return" in copy
    template = fingerprint(get_problem("mlp").template)
    assert similarity(fingerprint(original), fingerprint(copy), template) >= FLAG_THRESHOLD


def test_a_disguised_copy_shows_its_original_as_nearest_flagged_on_the_api_and_the_pages(
        client: TestClient, tokens: Tokens) -> None:
    original = submit(client, tokens.submitter, solution("correct_vectorized"), "ada")["id"]
    other = submit(client, tokens.submitter, solution("correct_loops"), "bob")["id"]
    copy = submit(client, tokens.other_submitter, disguised(solution("correct_vectorized")), "eve")["id"]

    sim = similar_of(client, tokens, copy)
    assert sim["fingerprinted"] is True and sim["compared"] == 2 and sim["threshold"] == FLAG_THRESHOLD
    nearest = sim["nearest"]
    assert nearest[0]["submission_id"] == original and nearest[0]["candidate"] == "ada"
    assert nearest[0]["score"] >= FLAG_THRESHOLD and nearest[0]["flagged"] is True
    assert sim["best_score"] == nearest[0]["score"] and sim["flagged"] is True
    assert all(m["submission_id"] != copy for m in nearest)  # earlier submissions only
    assert [m["submission_id"] for m in nearest[1:]] in ([], [other])
    assert all(not m["flagged"] for m in nearest[1:])
    # The first submission has nothing earlier; the later copy is not among its nearest.
    first = similar_of(client, tokens, original)
    assert first["compared"] == 0 and first["nearest"] == [] and first["best_score"] == 0.0

    listed = client.get("/v1/submissions", headers=Tokens.auth(tokens.interviewer)).json()["items"]
    by_id = {item["id"]: item["similarity"] for item in listed}
    assert by_id[copy]["best_score"] == nearest[0]["score"] and by_id[copy]["flagged"] is True
    assert by_id[original]["flagged"] is False and by_id[other]["flagged"] is False
    # The interviewer's detail view carries it too.
    detail = client.get(f"/v1/submissions/{copy}/detail", headers=Tokens.auth(tokens.interviewer)).json()
    assert detail["submission"]["similarity"]["nearest"][0]["submission_id"] == original

    report = page(client, tokens, f"/ui/submissions/{copy}")
    section = report[report.index('<section id="similar"'):]
    section = section[:section.index("</section>")]
    assert "Similar submissions" in section and f'href="/ui/submissions/{original}"' in section
    assert f"{nearest[0]['score']:.2f}" in section and "likely copy" in section and "ada" in section
    assert "Distance from the starter template" in section
    listing = page(client, tokens, "/ui/submissions")
    row = listing[listing.index(f'value="{copy}"'):]
    row = row[:row.index("</tr>")]
    assert f"{nearest[0]['score']:.2f}" in row and "likely copy" in row
    first_row = listing[listing.index(f'value="{original}"'):]
    assert "likely copy" not in first_row[:first_row.index("</tr>")]


def test_independent_correct_solutions_are_not_flagged(client: TestClient, tokens: Tokens) -> None:
    ids = [submit(client, tokens.submitter, solution(name), name)["id"]
           for name in ("correct_functional", "correct_loops", "correct_vectorized")]
    for sid in ids:
        sim = similar_of(client, tokens, sid)
        assert sim["fingerprinted"] is True and sim["flagged"] is False
        assert sim["best_score"] is not None and sim["best_score"] < FLAG_THRESHOLD
        assert all(not m["flagged"] and m["score"] < FLAG_THRESHOLD for m in sim["nearest"])
    last = similar_of(client, tokens, ids[-1])
    assert last["compared"] == 2
    assert "likely copy" not in page(client, tokens, "/ui/submissions")


def test_the_template_is_at_distance_zero_from_itself_and_a_solution_far_from_it(
        client: TestClient, tokens: Tokens) -> None:
    template = submit(client, tokens.submitter, get_problem("mlp").template, "lazy")["id"]
    written = submit(client, tokens.submitter, solution("correct_vectorized"), "ada")["id"]
    assert similar_of(client, tokens, template)["template_distance"] == pytest.approx(0.0, abs=1e-9)
    sim = similar_of(client, tokens, written)
    assert sim["template_distance"] > 0.5
    # The template's code is ignored: a solution shares nothing with the bare template.
    assert sim["nearest"] == [] and sim["best_score"] == 0.0 and sim["compared"] == 1
    report = page(client, tokens, f"/ui/submissions/{template}")
    assert "Distance from the starter template: <strong" in report and ">0.00</strong>" in report


def test_a_submitter_never_sees_similarity_on_the_api_or_a_page(client: TestClient, tokens: Tokens) -> None:
    original = submit(client, tokens.other_submitter, solution("correct_vectorized"), "ada")["id"]
    created = submit(client, tokens.submitter, disguised(solution("correct_vectorized")), "eve")
    assert "similarity" not in created
    sid = created["id"]
    assert similar_of(client, tokens, sid)["flagged"] is True  # there is something to hide
    wait_for_status(client, sid, tokens.submitter)
    mine = client.get(f"/v1/submissions/{sid}", headers=Tokens.auth(tokens.submitter))
    assert mine.status_code == 200 and "similarity" not in mine.json()
    listed = client.get("/v1/submissions", headers=Tokens.auth(tokens.submitter)).json()["items"]
    assert [i["id"] for i in listed] == [sid] and all("similarity" not in i for i in listed)
    for path in (f"/v1/submissions/{sid}/report", f"/v1/submissions/{sid}/report.html",
                 f"/v1/submissions/{sid}/report.junit.xml"):
        r = client.get(path, headers=Tokens.auth(tokens.submitter))
        assert r.status_code == 200, r.text
        assert original not in r.text and "ada" not in r.text and "Similar submissions" not in r.text
        assert "similarity" not in r.text and "likely copy" not in r.text
    assert client.get(f"/v1/submissions/{sid}/detail", headers=Tokens.auth(tokens.submitter)).status_code == 403
    for path in (f"/ui/submissions/{sid}", "/ui/submissions"):
        r = client.get(path, headers=Tokens.auth(tokens.submitter))
        assert r.status_code == 403 and "Similar" not in r.text and original not in r.text
    # Even an interviewer's stand-alone export leaves the section out: it is a document to hand around.
    export = client.get(f"/v1/submissions/{sid}/report.html", headers=Tokens.auth(tokens.interviewer)).text
    assert "Similar submissions" not in export


def test_a_notebook_is_fingerprinted_as_the_script_it_was_converted_to(client: TestClient, tokens: Tokens) -> None:
    cells = [{"cell_type": "code", "id": f"c{i}", "metadata": {}, "outputs": [], "execution_count": None,
              "source": "def " + part if i else part}
             for i, part in enumerate(solution("correct_vectorized").split("\ndef "))]
    notebook = json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    r = client.post("/v1/submissions", json={"problem": "mlp", "files": {"solution.ipynb": notebook},
                                             "candidate": "nb"}, headers=Tokens.auth(tokens.submitter))
    assert r.status_code == 202, r.text
    original = r.json()["id"]
    copy = submit(client, tokens.other_submitter, disguised(solution("correct_vectorized")), "eve")["id"]
    sim = similar_of(client, tokens, copy)
    assert sim["nearest"][0]["submission_id"] == original and sim["nearest"][0]["flagged"] is True
    assert similar_of(client, tokens, original)["template_distance"] > 0.5


@pytest.mark.parametrize("code", ["def broken(:\n    return 1\n", "x = " + "(" * 300 + "1" + ")" * 300 + "\n",
                                  "def f():\n\treturn 1\n        return 2\n"])
def test_a_file_that_does_not_parse_is_accepted_and_graded_with_no_fingerprint(
        client: TestClient, tokens: Tokens, code: str) -> None:
    before = submit(client, tokens.submitter, solution("correct_vectorized"), "ada")["id"]
    sid = submit(client, tokens.submitter, code, "bad")["id"]
    after = submit(client, tokens.submitter, disguised(solution("correct_vectorized")), "eve")["id"]
    done = wait_for_status(client, sid, tokens.submitter)
    assert done["status"] == "done" and done["error"] is None
    report = client.get(f"/v1/submissions/{sid}/report", headers=Tokens.auth(tokens.submitter))
    assert report.status_code == 200 and report.json()["status"] == "graded"
    store: Store = client.app.state.store  # type: ignore[attr-defined]
    with store.session() as db:
        stored = set(db.execute(text("SELECT submission_id FROM fingerprints")).scalars())
    assert sid not in stored and {before, after} <= stored
    sim = similar_of(client, tokens, sid)
    assert sim == {"fingerprinted": False, "template_distance": None, "nearest": [], "best_score": None,
                   "flagged": False, "compared": None, "threshold": FLAG_THRESHOLD, "too_large": False}
    assert "does not parse" in page(client, tokens, f"/ui/submissions/{sid}")
    # The others are compared as ever, the file without a fingerprint left out.
    sim_after = similar_of(client, tokens, after)
    assert sim_after["compared"] == 1 and sim_after["nearest"][0]["submission_id"] == before


def stored_fingerprint(client: TestClient, sid: str) -> tuple:  # type: ignore[type-arg]
    store: Store = client.app.state.store  # type: ignore[attr-defined]
    with store.session() as db:
        return tuple(db.execute(text("SELECT nearest, too_large, hashes FROM fingerprints WHERE submission_id = :id"),
                                {"id": sid}).one())


def test_accepting_a_submission_does_not_compare_it_the_first_interviewer_read_does(
        client: TestClient, tokens: Tokens) -> None:
    original = submit(client, tokens.submitter, solution("correct_vectorized"), "ada")["id"]
    copy = submit(client, tokens.other_submitter, disguised(solution("correct_vectorized")), "eve")["id"]
    wait_for_status(client, copy, tokens.other_submitter)
    assert stored_fingerprint(client, copy)[0] is None  # not compared on POST nor by grading
    assert similar_of(client, tokens, copy)["nearest"][0]["submission_id"] == original
    assert json.loads(stored_fingerprint(client, copy)[0])[0][0] == original  # kept for the next reads


def test_a_candidates_own_resubmission_is_not_a_likely_copy_of_their_earlier_attempt(
        client: TestClient, tokens: Tokens) -> None:
    first = submit(client, tokens.submitter, solution("correct_vectorized"), "ada")["id"]
    again = submit(client, tokens.submitter, disguised(solution("correct_vectorized")), "ada")["id"]
    sim = similar_of(client, tokens, again)
    assert sim["nearest"] == [] and sim["compared"] == 0 and sim["flagged"] is False
    # Another candidate on the same (shared CI) token is compared with both of ada's attempts.
    eve = submit(client, tokens.submitter, disguised(solution("correct_vectorized")), "eve")["id"]
    sim = similar_of(client, tokens, eve)
    assert sim["compared"] == 2 and {m["submission_id"] for m in sim["nearest"]} == {first, again}
    assert sim["flagged"] is True
    # Without a candidate's name nothing is left out: two nameless submissions are compared with each other.
    nameless = submit(client, tokens.other_submitter, solution("correct_loops"))["id"]
    nameless_copy = submit(client, tokens.other_submitter, solution("correct_loops"))["id"]
    sim = similar_of(client, tokens, nameless_copy)
    assert sim["compared"] == 4 and sim["nearest"][0]["submission_id"] == nameless and sim["flagged"] is True


def too_large_source() -> str:
    functions = [f"def f{i}(x, y):\n    z = x * {i} + y\n    for j in range(z):\n        if j % {i + 2}:\n"
                 f"            z = z - j * x[{i}]\n    return [z, y, x, {i}]\n" for i in range(1500)]
    return "\n\n".join(functions)


def test_a_file_too_large_to_compare_is_stored_so_never_compared_and_never_an_error(
        client: TestClient, tokens: Tokens) -> None:
    source = too_large_source()
    assert len(fingerprint(source).hashes) > service_similarity.MAX_HASHES
    before = submit(client, tokens.submitter, solution("correct_vectorized"), "ada")["id"]
    big = submit(client, tokens.submitter, source, "big")["id"]
    again = submit(client, tokens.other_submitter, source, "copycat")["id"]
    assert wait_for_status(client, big, tokens.submitter)["status"] == "done"
    assert stored_fingerprint(client, big)[1:] == (1, "[]")
    sim = similar_of(client, tokens, big)
    assert sim["fingerprinted"] is True and sim["nearest"] == [] and sim["best_score"] is None
    assert sim["compared"] is None and sim["flagged"] is False and sim["too_large"] is True
    assert similar_of(client, tokens, again)["compared"] is None
    assert "Not compared: too large" in page(client, tokens, f"/ui/submissions/{big}")
    later = submit(client, tokens.other_submitter, disguised(solution("correct_vectorized")), "eve")["id"]
    sim = similar_of(client, tokens, later)
    assert sim["compared"] == 1 and sim["nearest"][0]["submission_id"] == before  # the large ones left out
    listed = client.get("/v1/submissions", headers=Tokens.auth(tokens.interviewer))
    assert listed.status_code == 200
    assert stored_fingerprint(client, big)[0] is None  # and never compared on a list either


def test_a_read_compares_outside_any_transaction(client: TestClient, tokens: Tokens,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """While the comparison runs, another connection can take SQLite's write lock at once."""
    submit(client, tokens.submitter, solution("correct_vectorized"), "ada")
    copy = submit(client, tokens.other_submitter, disguised(solution("correct_vectorized")), "eve")["id"]
    store: Store = client.app.state.store  # type: ignore[attr-defined]
    path = store.engine.url.database
    assert path
    compare = service_similarity._compare
    locked: list[bool] = []

    def checked(earlier: service_similarity._Earlier) -> service_similarity.Nearest:
        other = sqlite3.connect(path, timeout=0.2, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            locked.append(False)
        except sqlite3.OperationalError:
            locked.append(True)
        finally:
            other.close()
        return compare(earlier)

    monkeypatch.setattr(service_similarity, "_compare", checked)
    assert similar_of(client, tokens, copy)["flagged"] is True
    assert client.get("/v1/submissions", headers=Tokens.auth(tokens.interviewer)).status_code == 200
    assert locked and not any(locked)


@pytest.mark.slow
def test_over_http_on_a_real_server_with_real_grading(tmp_path: Path) -> None:
    """`grader serve` on loopback, the real sandbox: the copy is flagged for the interviewer and hidden from the
    submitter, and the file that does not parse is graded as any other (a report that says where it breaks)."""
    server = LiveServer(tmp_path / "data")
    submitter, interviewer = server.token("submitter", "ci"), server.token("interviewer", "ivy")
    server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            ids = {}
            for name, code in (("ada", solution("correct_vectorized")), ("bad", "def broken(:\n    return 1\n"),
                               ("eve", disguised(solution("correct_vectorized")))):
                r = client.post("/v1/submissions", json={"problem": "mlp", "code": code, "candidate": name},
                                headers=Tokens.auth(submitter))
                assert r.status_code == 202 and "similarity" not in r.json(), r.text
                ids[name] = r.json()["id"]
            sim = client.get(f"/v1/submissions/{ids['eve']}", headers=Tokens.auth(interviewer)).json()["similarity"]
            assert sim["nearest"][0]["submission_id"] == ids["ada"] and sim["nearest"][0]["flagged"] is True
            assert sim["compared"] == 1  # the file that does not parse has no fingerprint to compare
            mine = client.get(f"/v1/submissions/{ids['eve']}", headers=Tokens.auth(submitter)).json()
            assert "similarity" not in mine
            report_page = client.get(f"/ui/submissions/{ids['eve']}", headers=Tokens.auth(interviewer))
            assert report_page.status_code == 200 and "Similar submissions" in report_page.text
            assert f'href="/ui/submissions/{ids["ada"]}"' in report_page.text and "likely copy" in report_page.text
            assert client.get(f"/ui/submissions/{ids['eve']}", headers=Tokens.auth(submitter)).status_code == 403
            deadline = time.monotonic() + 180
            while (bad := client.get(f"/v1/submissions/{ids['bad']}", headers=Tokens.auth(submitter)).json())[
                    "status"] not in ("done", "failed"):
                assert time.monotonic() < deadline, f"still {bad['status']}"
                time.sleep(0.2)
            assert bad["status"] == "done" and bad["error"] is None and bad["score"] == 0.0
            report = client.get(f"/v1/submissions/{ids['bad']}/report", headers=Tokens.auth(submitter)).json()
            assert report["status"] == "graded" and "line 1" in json.dumps(report)
            unparsed = client.get(f"/v1/submissions/{ids['bad']}", headers=Tokens.auth(interviewer)).json()
            assert unparsed["similarity"]["fingerprinted"] is False
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------------------------
# Migration 0004 on a database made at 0003 with submissions in it

INSERT_SUBMISSION = ("INSERT INTO submissions (id, problem_id, problem_version, candidate, metadata, request_hash, "
                     "entry, status, attempts, created_at) VALUES (:id, :problem, '1', :candidate, '{}', 'h', "
                     "'solution.py', 'done', 1, :created_at)")
INSERT_FILE = "INSERT INTO submission_files (submission_id, name, text) VALUES (:id, 'solution.py', :text)"


def old_rows(count: int) -> list[dict[str, str]]:
    """Submissions as a grader at 0003 stored them, oldest first: the original of a copy first, the copy and a
    file that does not parse last, a problem gone from the catalog among them, tiny distinct files between."""
    rows = [{"problem": "mlp", "candidate": "ada", "text": solution("correct_vectorized")}]
    rows += [{"problem": "mlp", "candidate": f"c{i}",
              "text": f"def affine_forward(x, w, b):\n    return x @ w + b * {i}\n"} for i in range(count - 4)]
    rows += [{"problem": "withdrawn", "candidate": "old", "text": solution("correct_loops")},
             {"problem": "mlp", "candidate": "bad", "text": "def broken(:\n"},
             {"problem": "mlp", "candidate": "eve", "text": disguised(solution("correct_vectorized"))}]
    for i, row in enumerate(rows):
        row["id"] = f"{i:032x}"
        # As SQLAlchemy writes a datetime into SQLite (microseconds included), one second apart.
        row["created_at"] = f"2026-12-01 {i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}.000000"
    return rows


def make_at_0003(url: str, rows: list[dict[str, str]]) -> None:
    store = Store(url)
    try:
        with store.engine.begin() as connection:  # a database as a grader before 0004 left it
            cfg = alembic_config(url)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "0003")
        with store.engine.begin() as connection:
            connection.execute(text(INSERT_SUBMISSION), rows)
            connection.execute(text(INSERT_FILE), rows)
    finally:
        store.close()


def check_migrated(store: Store, rows: list[dict[str, str]]) -> None:
    """Every parsable entry file fingerprinted once, none compared yet; then an interviewer's read compares."""
    ids = {r["candidate"]: r["id"] for r in rows}
    with store.session() as db:
        assert db.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == newest_migration()
        stored = {sid: (distance, nearest) for sid, distance, nearest in db.execute(
            text("SELECT submission_id, template_distance, nearest FROM fingerprints")).all()}
    assert set(stored) == {r["id"] for r in rows} - {ids["bad"]}
    assert all(nearest is None for _, nearest in stored.values())
    assert stored[ids["old"]][0] is None  # a problem gone from the catalog: no template to measure from
    assert stored[ids["ada"]][0] > 0.5
    sim = subs.get_submission(store, INTERVIEWER, ids["eve"]).similarity
    assert sim is not None and sim.fingerprinted and sim.compared == len(rows) - 3  # mlp's, minus bad and itself
    assert sim.nearest[0].submission_id == ids["ada"] and sim.nearest[0].flagged
    with store.session() as db:  # kept: the next read does not compare again
        kept = db.execute(text("SELECT best_score, compared FROM fingerprints WHERE submission_id = :id"),
                          {"id": ids["eve"]}).one()
    assert kept == (sim.best_score, sim.compared)
    unparsed = subs.get_submission(store, INTERVIEWER, ids["bad"]).similarity
    assert unparsed is not None and not unparsed.fingerprinted


def downgrade_to_0003(url: str, count: int) -> None:
    store = Store(url)  # and back: the table goes, the submissions stay
    try:
        with store.engine.begin() as connection:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = connection
            command.downgrade(cfg, "0003")
        assert "fingerprints" not in inspect(store.engine).get_table_names()
        with store.engine.begin() as connection:
            assert connection.execute(text("SELECT count(*) FROM submissions")).scalar_one() == count
    finally:
        store.close()


def test_migration_0004_fingerprints_the_submissions_of_a_database_made_at_0003(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    # More rows than two of the migration's batches, and not a multiple of one: every batch and the short last
    # one are fingerprinted, none twice, none skipped.
    rows = old_rows(2 * migration_batch() + 7)
    make_at_0003(settings.sqlalchemy_url, rows)
    migrated = open_store(settings)  # what `grader serve` / `grader migrate` does at start
    try:
        check_migrated(migrated, rows)
    finally:
        migrated.close()
    with TestClient(create_app(settings, grade=standin_grade)) as client:  # the pages read the migrated rows
        tokens = Tokens(client.app.state.store)  # type: ignore[attr-defined]
        copy = next(r["id"] for r in rows if r["candidate"] == "eve")
        listing = page(client, tokens, "/ui/submissions")
        row = listing[listing.index(f'value="{copy}"'):]
        assert "likely copy" in row[:row.index("</tr>")]
        assert "Similar submissions" in page(client, tokens, f"/ui/submissions/{copy}")
    downgrade_to_0003(settings.sqlalchemy_url, len(rows))


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    with running_cluster() as c:
        yield c


@pytest.mark.system
def test_migration_0004_on_postgresql(cluster: PgCluster) -> None:
    url = cluster.new_database()
    rows = old_rows(12)
    make_at_0003(url, rows)
    migrated = Store(url)
    try:
        migrated.migrate()
        check_migrated(migrated, rows)
    finally:
        migrated.close()
    downgrade_to_0003(url, len(rows))
