"""The same store, queue and API on PostgreSQL (a throwaway local cluster), selected by GRADER_DATABASE_URL."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conftest import Tokens, make_settings, standin_grade, wait_for_status
from fastapi.testclient import TestClient
from pg_cluster import PgCluster, running_cluster
from sqlalchemy import func, select

from grader.api.app import create_app
from grader.config import Settings
from grader.service import submissions as subs
from grader.service.auth import SYSTEM
from grader.service.grading import build_pool
from grader.service.schemas import SubmissionCreate
from grader.store.db import open_store
from grader.store.models import Base, ReportRow

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    if importlib.util.find_spec("psycopg") is None:
        pytest.fail("the PostgreSQL driver is not installed: pip install '.[postgres]' (scripts/setup.sh does)")
    with running_cluster() as c:
        yield c


@pytest.fixture
def pg_settings(cluster: PgCluster, tmp_path: Path) -> Settings:
    return make_settings(tmp_path, database_url=cluster.new_database(), workers=4)


def test_migrations_build_exactly_the_models_on_postgres(pg_settings: Settings) -> None:
    store = open_store(pg_settings)
    assert store.engine.dialect.name == "postgresql"
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata) == []
    store.migrate()


def test_api_flow_on_postgres(pg_settings: Settings) -> None:
    with TestClient(create_app(pg_settings, grade=standin_grade)) as client:
        tokens = Tokens(client.app.state.store)  # type: ignore[attr-defined]
        h = {**Tokens.auth(tokens.submitter), "Idempotency-Key": "k1"}
        body = {"problem": "mlp", "code": "affine_forward\n", "candidate": "ada", "metadata": {"a": "\x00é"}}
        first = client.post("/v1/submissions", json=body, headers=h)
        again = client.post("/v1/submissions", json=body, headers=h)
        assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
        sid = first.json()["id"]
        done = wait_for_status(client, sid, tokens.submitter)
        assert done["status"] == "done" and done["score"] == 8.0
        ih = Tokens.auth(tokens.interviewer)
        page = client.get("/v1/submissions", params={"candidate": "ada", "status": "done",
                                                     "created_after": "2000-01-01T00:00:00+02:00"}, headers=ih).json()
        assert [i["id"] for i in page["items"]] == [sid]
        assert client.post(f"/v1/submissions/{sid}/notes", json={"text": "ok"}, headers=ih).status_code == 201
        r = client.post(f"/v1/submissions/{sid}/overrides", headers=ih,
                        json={"test_id": "affine_backward", "points": 5, "reason": "partial"})
        assert r.status_code == 201
        detail = client.get(f"/v1/submissions/{sid}/detail", headers=ih).json()
        assert detail["submission"]["final_score"] == 13.0 and detail["submission"]["metadata"] == {"a": "\x00é"}
        assert [e["action"] for e in detail["audit"]] == ["submission.created", "submission.graded", "note.added",
                                                          "override.set"]
        assert client.get(f"/v1/submissions/{sid}", headers=Tokens.auth(tokens.other_submitter)).status_code == 404


def test_two_pools_claim_each_job_once_on_postgres(pg_settings: Settings) -> None:
    store = open_store(pg_settings)
    ids = [subs.create_submission(store, pg_settings, SYSTEM, SubmissionCreate(problem="mlp", code=f"# {i}\n"))[0].id
           for i in range(24)]
    graded: list[str] = []

    def grade(problem_id: str, files: dict[str, str], s: Settings, entry: str):  # type: ignore[no-untyped-def]
        graded.append(files["solution.py"])
        return standin_grade(problem_id, files, s, entry)

    pools = [build_pool(store, pg_settings, grade=grade) for _ in range(2)]
    for p in pools:
        p.start()
    try:
        import time

        deadline = time.monotonic() + 30
        while True:
            with store.session() as db:
                n = db.scalar(select(func.count()).select_from(ReportRow)) or 0
            if n == len(ids) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        for p in pools:
            p.stop()
    assert n == len(ids)
    assert sorted(graded) == sorted(f"# {i}\n" for i in range(24))  # eight workers, each job graded once


def test_text_postgres_cannot_store_is_a_4xx_not_a_500(pg_settings: Settings) -> None:
    # PostgreSQL text cannot hold NUL: every client string that could reach SQL is checked first.
    with TestClient(create_app(pg_settings, grade=standin_grade), raise_server_exceptions=False) as client:
        tokens = Tokens(client.app.state.store)  # type: ignore[attr-defined]
        ih = Tokens.auth(tokens.interviewer)
        assert client.get("/v1/submissions/ab%00cd", headers=ih).status_code == 404
        assert client.post("/v1/submissions/ab%00cd/notes", json={"text": "x"}, headers=ih).status_code == 404
        for param in ("candidate", "problem"):
            r = client.get("/v1/submissions", params={param: "a\x00b"}, headers=ih)
            assert r.status_code == 400 and "printable" in r.json()["detail"]
        r = client.post("/v1/tokens", json={"role": "submitter", "name": "a\x00b"}, headers=Tokens.auth(tokens.admin))
        assert r.status_code == 400 and "printable" in r.json()["detail"]
        r = client.post("/v1/submissions", json={"problem": "mlp", "code": "x", "candidate": "a\x00"},
                        headers=Tokens.auth(tokens.submitter))
        assert r.status_code == 400
        r = client.post("/v1/submissions", json={"problem": "mlp", "code": "x"},
                        headers={**Tokens.auth(tokens.submitter), "Idempotency-Key": "a\x01b"})
        assert r.status_code == 400
