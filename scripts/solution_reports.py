"""Grade every solution under tests/solutions/ (and each reference) and keep what each verdict was.

    python scripts/solution_reports.py grade OUT.json [--sandbox local] [--problem mlp ...]
    python scripts/solution_reports.py compare BEFORE.json AFTER.json

`grade` writes, per solution, the score and the status of every test; `compare`
prints every solution whose score or failing tests moved between two such files
and exits 1 when any did, so a change to grading code can say which verdicts it
moved and why. Messages and durations are not compared: they may be reworded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def targets(problems: list[str] | None) -> list[tuple[str, Path]]:
    found = [(p.parent.name, p) for p in sorted((ROOT / "tests" / "solutions").glob("*/*.py"))]
    found += [(p.stem, p) for p in sorted((ROOT / "reference").glob("*.py")) if not p.stem.startswith("_")]
    return [(pid, path) for pid, path in found if not problems or pid in problems]


def cmd_grade(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(ROOT))
    try:
        from grader.engine import grade
        from grader.engine.catalog import list_problems
        from grader.isolation import get_backend

        def grade_submission(pid: str, files: dict[str, str], backend: str) -> Any:
            return grade(pid, files, backend=get_backend(backend))
    except ImportError:  # a commit before the engine was a package of its own: compare against it too
        from grader.catalog import list_problems  # type: ignore[no-redef]

        from grader.service.grading import grade_submission  # type: ignore[no-redef]

    known = {p.id for p in list_problems()}
    out: dict[str, dict[str, object]] = {}
    for pid, path in targets(args.problem):
        if pid not in known:
            continue
        key = str(path.relative_to(ROOT))
        started = time.monotonic()
        report = grade_submission(pid, {"solution.py": path.read_text()}, backend=args.sandbox)
        out[key] = {"problem": pid, "status": report.status, "score": report.score, "max_score": report.max_score,
                    "tests": {t.id: t.status for t in report.tests}}
        print(f"{key}: {report.score:g}/{report.max_score:g} ({time.monotonic() - started:.1f} s)", flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    before = json.loads(Path(args.before).read_text())
    after = json.loads(Path(args.after).read_text())
    moved = 0
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old is None or new is None:
            print(f"{key}: only in {'after' if old is None else 'before'}")
            moved += 1
            continue
        changes = [f"{t}: {old['tests'].get(t, '-')} -> {new['tests'].get(t, '-')}"
                   for t in sorted(set(old["tests"]) | set(new["tests"]))
                   if old["tests"].get(t) != new["tests"].get(t)]
        if changes or old["score"] != new["score"] or old["status"] != new["status"]:
            moved += 1
            print(f"{key}: {old['score']:g} -> {new['score']:g}" + "".join(f"\n    {c}" for c in changes))
    print(f"{moved} of {len(set(before) | set(after))} solutions moved")
    return 1 if moved else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("grade")
    p.add_argument("out")
    p.add_argument("--sandbox", default="local")
    p.add_argument("--problem", action="append")
    p.set_defaults(func=cmd_grade)
    p = sub.add_parser("compare")
    p.add_argument("before")
    p.add_argument("after")
    p.set_defaults(func=cmd_compare)
    args = parser.parse_args()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
