"""The schema as migrated equals the models; JUnit XML is valid and escapes whatever the candidate printed."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from conftest import make_settings, standin_grade
from sqlalchemy import inspect

from grader.engine.report import Output
from grader.reports.junit import render_junit
from grader.store.db import Store, alembic_config, open_store
from grader.store.models import Base


def test_migrations_build_exactly_the_models(tmp_path: Path) -> None:
    store = open_store(make_settings(tmp_path))
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    store.migrate()  # a second start-up is a no-op


def test_downgrade_and_upgrade_again(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'g.db'}")
    store.migrate()
    with store.engine.begin() as conn:
        cfg = alembic_config(store.url)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert set(inspect(store.engine).get_table_names()) == {"alembic_version"}
    store.migrate()
    assert {"submissions", "reports", "tokens", "notes", "overrides", "audit_events", "webhook_deliveries"} <= \
        set(inspect(store.engine).get_table_names())


def test_junit_counts_and_escapes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    report = standin_grade("mlp", {"solution.py": "affine_forward relu_forward"}, settings, "solution.py")
    report = report.model_copy(update={"output": Output(text="<script>\x00\x1b[31m & ]]> done", bytes_total=30)})
    report.tests[-2] = report.tests[-2].model_copy(update={"status": "timeout", "message": "too slow"})
    xml = render_junit(report)
    suite = ET.fromstring(xml.encode())
    cases = suite.findall("testcase")
    assert suite.get("tests") == str(len(report.tests)) == str(len(cases))
    assert suite.get("failures") == str(sum(t.status == "failed" for t in report.tests))
    assert suite.get("errors") == "1" and suite.get("skipped") == "0"
    failure = cases[len(report.tests) - 2].find("error")
    assert failure is not None and failure.get("type") == "timeout"
    first_failed = next(c for c, t in zip(cases, report.tests) if t.status == "failed")
    assert "<script>alert(1)</script>" in (first_failed.find("failure").text or "")  # type: ignore[union-attr]
    assert "smallest failing input" in (first_failed.find("failure").text or "")  # type: ignore[union-attr]
    assert "<script>alert" not in xml  # escaped in the document, intact once parsed
    out = suite.find("system-out")
    assert out is not None and out.text == "<script>\ufffd\ufffd[31m & ]]> done"
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}  # type: ignore[union-attr]
    assert props["score"] == f"{report.score:g}" and props["max_score"] == f"{report.max_score:g}"
