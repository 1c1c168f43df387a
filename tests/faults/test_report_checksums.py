"""Report checksums: written with the report, backfilled by migration 0003, checked on every read.

A report changed on disk after it was written (one byte of the SQLite file) is never served as graded: the
API answers 500 naming the submission, and `verify_reports` lists it.
"""

from __future__ import annotations

import importlib.util
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from fastapi.testclient import TestClient
from sqlalchemy import text

from grader.api.app import create_app
from grader.config import Settings
from grader.store.db import STORE_DIR, Store, alembic_config, newest_migration, open_store, verify_reports
from grader.store.models import report_checksum
from tests.service.conftest import Tokens, make_settings, standin_grade, wait_for_status

pytestmark = [pytest.mark.slow, pytest.mark.faults]

# Stand-in grading (tests/service/conftest.py): a test passes when the code names it; two different scores.
GOOD = "# affine_forward affine_backward\n"
BAD = "# affine_forward\n"


def migration_batch() -> int:
    """Migration 0003's backfill batch size (its module's name is not an identifier: loaded by path)."""
    spec = importlib.util.spec_from_file_location("migration_0003",
                                                  STORE_DIR / "migrations" / "versions" / "0003_report_checksum.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return int(module.BATCH)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, grade=standin_grade)) as c:
        yield c


def graded(client: TestClient, tokens: Tokens, codes: list[str]) -> list[str]:
    ids = []
    for code in codes:
        r = client.post("/v1/submissions", json={"problem": "mlp", "code": code},
                        headers=tokens.auth(tokens.submitter))
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    for sid in ids:
        assert wait_for_status(client, sid, tokens.submitter)["status"] == "done"
    return ids


def corrupt_one_byte(db_path: Path, submission_id: str) -> tuple[str, str]:
    """Change one digit of the stored report's score in the database file itself, as a bad disk would;
    returns the (old, new) byte. SQLite keeps no checksum of its own pages, so it reads back silently."""
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the main file, the WAL empty
        stored = conn.execute("SELECT report_json FROM reports WHERE submission_id = ?",
                              (submission_id,)).fetchone()[0]
    data = bytearray(db_path.read_bytes())
    # The JSON's head up to its score: within the row's first page (a long report overflows to more pages).
    needle = stored[:stored.index('"score":') + len('"score":') + 4].encode("utf-8")
    at = data.find(needle)
    assert at >= 0 and data.find(needle, at + 1) < 0, "the head of the report is not stored once in the file"
    score_at = at + len(needle) - 4
    old = bytes([data[score_at]])
    assert old.isdigit()
    data[score_at] = ord("9") if old != b"9" else ord("8")
    db_path.write_bytes(bytes(data))
    return old.decode(), chr(data[score_at])


def test_a_report_corrupted_on_disk_is_refused_not_served(client: TestClient, settings: Settings,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    store: Store = client.app.state.store  # type: ignore[attr-defined]
    tokens = Tokens(store)
    good, bad = graded(client, tokens, [GOOD, BAD])
    assert verify_reports(store) == []
    with store.session() as db:
        rows = db.execute(text("SELECT submission_id, report_json, checksum FROM reports")).all()
    assert len(rows) == 2 and all(checksum == report_checksum(js) for _, js, checksum in rows)

    store.engine.dispose()  # no pooled connection holds pages of the file while it is changed underneath
    old, new = corrupt_one_byte(settings.data_dir / "grader.db", bad)

    caplog.set_level(logging.ERROR)
    for path in (f"/v1/submissions/{bad}/report", f"/v1/submissions/{bad}/report.junit.xml",
                 f"/v1/submissions/{bad}/report.html", f"/v1/submissions/{bad}/detail"):
        r = client.get(path, headers=tokens.auth(tokens.interviewer))
        assert r.status_code == 500, (path, r.status_code, r.text[:300])
        assert f"stored report of submission {bad} fails its checksum" in r.text, (path, r.text[:300])
    r = client.post(f"/v1/submissions/{bad}/overrides", headers=tokens.auth(tokens.interviewer),
                    json={"test_id": "affine_forward", "points": 0, "reason": "no"})
    assert r.status_code == 500 and "fails its checksum" in r.text
    assert f"stored report of submission {bad} fails its checksum" in caplog.text
    # The other report is intact and served; the summary (no report JSON) still answers.
    assert client.get(f"/v1/submissions/{good}/report", headers=tokens.auth(tokens.interviewer)).status_code == 200
    assert client.get(f"/v1/submissions/{bad}", headers=tokens.auth(tokens.interviewer)).status_code == 200
    assert verify_reports(store) == [bad], f"one byte of the score changed ({old} -> {new})"


def test_migration_0003_backfills_the_checksums_of_existing_reports(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    settings.data_dir.mkdir(parents=True)
    url = settings.sqlalchemy_url
    store = Store(url)
    try:
        with store.engine.begin() as connection:  # a database as a grader before 0003 left it
            cfg = alembic_config(url)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "0002")
        # More rows than two of the migration's batches, and not a multiple of one: every batch and the
        # short last one are backfilled, none twice, none skipped.
        count = 2 * migration_batch() + 7
        reports = {f"{i:032x}": f'{{"score": {i % 10}, "max_score": 10, "text": "caf\u00e9 {i}"}}'
                   for i in range(count)}
        with store.engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO submissions (id, problem_id, problem_version, metadata, request_hash, entry, "
                "status, score, max_score, attempts, created_at) VALUES (:id, 'mlp', '1', '{}', 'h', "
                "'solution.py', 'done', :score, 10, 1, '2026-12-01 00:00:00')"),
                [{"id": sid, "score": i % 10} for i, sid in enumerate(reports)])
            connection.execute(text("INSERT INTO reports (submission_id, report_json, attempt, created_at) "
                                    "VALUES (:id, :js, 1, '2026-12-01 00:00:00')"),
                               [{"id": sid, "js": js} for sid, js in reports.items()])
    finally:
        store.close()

    migrated = open_store(settings)  # what `grader serve` / `grader migrate` does at start
    try:
        with migrated.session() as db:
            assert db.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == newest_migration()
            stored: dict[str, str] = dict(db.execute(text("SELECT submission_id, checksum FROM reports")).all())
        assert stored == {sid: report_checksum(js) for sid, js in reports.items()}
        assert verify_reports(migrated, batch=97) == []
        with migrated.session() as db:
            db.execute(text("UPDATE reports SET report_json = replace(report_json, '3', '4') "
                            "WHERE submission_id = :id"), {"id": f"{3:032x}"})
        assert verify_reports(migrated, batch=97) == [f"{3:032x}"]
    finally:
        migrated.close()

    downgraded = Store(url)  # and back: the column goes, the reports stay
    try:
        with downgraded.engine.begin() as connection:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = connection
            command.downgrade(cfg, "0002")
        with downgraded.session() as db:
            assert db.execute(text("SELECT count(*) FROM reports")).scalar_one() == len(reports)
    finally:
        downgraded.close()


def test_verify_reports_command_lists_each_failing_submission_with_its_reason(
        client: TestClient, settings: Settings, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`grader verify-reports` on a real SQLite file: a report byte changed on disk, a summary score changed
    (what the list, the CSV export, the webhooks and the compare page read), a report left without a
    checksum; exit 1 naming each, 0 when all pass, 3 when the database cannot be read."""
    from grader.cli import main

    monkeypatch.delenv("GRADER_DATABASE_URL", raising=False)
    store: Store = client.app.state.store  # type: ignore[attr-defined]
    tokens = Tokens(store)
    codes = [GOOD, BAD, "# affine_backward\n", "# nothing\n", "# affine_forward affine_backward train_mlp\n"]
    intact, corrupted, summary, unchecked, other = graded(client, tokens, codes)
    data_dir = str(settings.data_dir)

    assert main(["verify-reports", "--data-dir", data_dir]) == 0
    out = capsys.readouterr().out
    assert "5 reports checked, 0 failing" in out, out

    with store.session() as db:
        db.execute(text("UPDATE submissions SET score = score + 1 WHERE id = :id"), {"id": summary})
        db.execute(text("UPDATE reports SET checksum = NULL WHERE submission_id = :id"), {"id": unchecked})
    store.engine.dispose()
    corrupt_one_byte(settings.data_dir / "grader.db", corrupted)

    assert main(["verify-reports", "--data-dir", data_dir]) == 1
    out = capsys.readouterr().out
    lines = {line.split(": ", 1)[0]: line for line in out.splitlines() if ": " in line}
    assert "fails its checksum" in lines[corrupted], out
    assert "summary's score" in lines[summary] and "differs from its report's" in lines[summary], out
    assert "no checksum" in lines[unchecked], out
    assert intact not in lines and other not in lines, out
    assert "5 reports checked, 3 failing" in out, out
    assert verify_reports(store) == sorted([corrupted, summary, unchecked])

    # A database this grader cannot read: none at all, or one without the column it checks.
    assert main(["verify-reports", "--data-dir", str(settings.data_dir / "missing")]) == 3
    assert "cannot read the database" in capsys.readouterr().err
    with store.session() as db:
        db.execute(text("ALTER TABLE reports DROP COLUMN checksum"))
    store.engine.dispose()
    assert main(["verify-reports", "--data-dir", data_dir]) == 3
    err = capsys.readouterr().err
    assert "cannot read the database" in err and "checksum" in err, err
