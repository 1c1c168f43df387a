"""Similarity across submissions: each submission's fingerprint, and the earlier submissions it resembles.

The fingerprint (grader.engine.similarity) of the entry file is computed when a submission is accepted and
stored with it in the same transaction (`fingerprints`, one row per submission; migration 0004 fingerprinted
the older ones). A file that does not parse gets no row and the submission is accepted and graded as any
other: nothing is ever said to the candidate about it.

Which earlier submissions of the same problem a submission resembles is computed once and stored: right after
the submission is accepted (after its commit, best effort), or, when that did not happen (submissions older
than 0004, a store that failed at that moment), the first time an interviewer reads it or a list shows it.
Earlier submissions never change, so the answer does not either (for one fingerprint version and template).
The comparison is bounded: the `MAX_COMPARED` most recent earlier submissions of the problem, each a few
hundred hashes, about 0.1 s at the bound on one core. Code of the problem's starter template is ignored on
both sides, as `grader similarity --problem` does.

Only interviewers and admins see any of it: submitters never learn of other candidates' submissions.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from grader.engine import similarity as engine
from grader.engine.catalog import get_problem
from grader.service.schemas import SimilarityOut, SimilarMatch
from grader.store.db import Store
from grader.store.models import Submission, SubmissionFingerprint

log = logging.getLogger(__name__)

MAX_COMPARED = 2000  # the most recent earlier submissions of the problem a submission is compared with
NEAREST = 3  # how many of the most similar earlier submissions are kept
LIST_BUDGET = 10  # a list page compares at most this many not yet compared submissions; the rest wait


@lru_cache(maxsize=64)
def _template_fingerprint(template: str) -> engine.Fingerprint | None:
    try:
        return engine.fingerprint(template, "template.py")
    except engine.NotParsable:
        return None


def template_of(problem_id: str) -> engine.Fingerprint | None:
    """The fingerprint of the problem's starter template; None when the problem or its template is gone."""
    try:
        return _template_fingerprint(get_problem(problem_id).template)
    except Exception:  # UnknownProblem: a problem withdrawn from the catalog since
        return None


def new_fingerprint(submission_id: str, problem_id: str, source: str) -> SubmissionFingerprint | None:
    """The row to store for a submission's entry file; None when the file does not parse.

    Never raises for anything in the file: a candidate's code is never an error of the service.
    """
    try:
        fp = engine.fingerprint(source, "solution.py")
    except engine.NotParsable:
        return None
    except Exception:  # a tree too deep to walk, say: no fingerprint, and the submission goes on
        log.warning("submission %s: no similarity fingerprint", submission_id, exc_info=True)
        return None
    template = template_of(problem_id)
    distance = engine.distance_from_template(fp, template) if template is not None else None
    return SubmissionFingerprint(submission_id=submission_id, version=fp.version, k=fp.k, w=fp.w,
                                 hashes=json.dumps(fp.hashes, separators=(",", ":")), template_distance=distance)


@dataclass(frozen=True)
class Nearest:
    matches: list[tuple[str, float]]
    compared: int


@dataclass(frozen=True)
class _Earlier:
    """What a comparison needs, read from the store; the comparison itself runs outside any transaction."""

    problem_id: str
    k: int
    w: int
    version: int
    hashes: str
    others: list[tuple[str, str]]  # (submission id, hashes as JSON), most recent first


def _earlier(db: Session, row: SubmissionFingerprint, submission: Submission) -> _Earlier:
    """The fingerprints of the `MAX_COMPARED` most recent earlier submissions of the problem (same version)."""
    others = db.execute(
        select(SubmissionFingerprint.submission_id, SubmissionFingerprint.hashes)
        .join(Submission, Submission.id == SubmissionFingerprint.submission_id)
        .where(Submission.problem_id == submission.problem_id, Submission.id != submission.id,
               SubmissionFingerprint.version == row.version,
               SubmissionFingerprint.k == row.k, SubmissionFingerprint.w == row.w,
               or_(Submission.created_at < submission.created_at,
                   and_(Submission.created_at == submission.created_at, Submission.id < submission.id)))
        .order_by(Submission.created_at.desc(), Submission.id.desc()).limit(MAX_COMPARED)).all()
    return _Earlier(problem_id=submission.problem_id, k=row.k, w=row.w, version=row.version, hashes=row.hashes,
                    others=[(str(i), str(h)) for i, h in others])


def _multiset(hashes: list[int], ignored: set[int]) -> Counter[int]:
    counts = Counter(hashes)
    for h in ignored & counts.keys():
        del counts[h]
    return counts


def _compare(earlier: _Earlier) -> Nearest:
    """The earlier submissions most similar to this one, best first, scored by the engine."""
    template = template_of(earlier.problem_id)
    ignored = set(template.hashes) if template is not None else set()
    mine_hashes = json.loads(earlier.hashes)
    mine = _multiset(mine_hashes, ignored)
    mine_size = mine.total()
    # A first pass ranks by the same Jaccard index as the engine, on the stored multisets: only the shared
    # hashes are walked, so a bounded pass stays cheap. The kept ones are scored by the engine itself.
    ranked: list[tuple[float, int, str, list[int]]] = []
    for order, (other_id, other_json) in enumerate(earlier.others):
        other_hashes = json.loads(other_json)
        theirs = _multiset(other_hashes, ignored)
        shared = sum(min(mine[h], theirs[h]) for h in mine.keys() & theirs.keys())
        if shared:
            ranked.append((shared / (mine_size + theirs.total() - shared), -order, other_id, other_hashes))
    ranked.sort(reverse=True)

    def as_fingerprint(hashes: list[int]) -> engine.Fingerprint:
        # The stored form keeps the multiset of hashes, which is all that scores and distances read.
        return engine.Fingerprint({"<all>": tuple(hashes)}, k=earlier.k, w=earlier.w, version=earlier.version)

    me = as_fingerprint(mine_hashes)
    matches = [(other_id, round(engine.similarity(me, as_fingerprint(hashes), template), 4))
               for _, _, other_id, hashes in ranked[:NEAREST]]
    return Nearest(matches=matches, compared=len(earlier.others))


def save(store: Store, results: dict[str, Nearest]) -> None:
    """Keep what was compared, best effort: a store that cannot write now only means comparing again later."""
    if not results:
        return
    try:
        with store.session() as db:
            for submission_id, nearest in results.items():
                row = db.get(SubmissionFingerprint, submission_id)
                if row is not None:
                    row.nearest = json.dumps(nearest.matches)
                    row.best_score = nearest.matches[0][1] if nearest.matches else 0.0
                    row.compared = nearest.compared
    except Exception:
        log.warning("could not store the nearest submissions of %s (compared again when next read)",
                    ", ".join(sorted(results)), exc_info=True)


def compare_accepted(store: Store, submission_id: str) -> None:
    """Compare a just accepted submission with the earlier ones and store the result; never raises (the
    submission is accepted already: what fails here is done again when an interviewer reads it)."""
    try:
        with store.session() as db:
            row = db.get(SubmissionFingerprint, submission_id)
            submission = db.get(Submission, submission_id)
            if row is None or submission is None:
                return
            earlier = _earlier(db, row, submission)
        save(store, {submission_id: _compare(earlier)})  # compared outside the transaction: no lock held
    except Exception:
        log.warning("could not compare submission %s with the earlier ones (done when it is read)",
                    submission_id, exc_info=True)


def views(db: Session, submissions: Iterable[Submission], *,
          budget: int | None = None) -> tuple[dict[str, SimilarityOut], dict[str, Nearest]]:
    """Submission id -> its similarity view (for interviewers), and what was compared now.

    Submissions not yet compared are compared now, at most `budget` of them (None: all); the others show
    `best_score` null. The caller passes what was compared to `save` once its own unit of work has ended (a
    session holds SQLite's write lock: a second one inside it would wait), so a read never fails for want of
    writing them.
    """
    wanted = list(submissions)
    by_id = {s.id: s for s in wanted}
    rows = {r.submission_id: r for r in db.scalars(
        select(SubmissionFingerprint).where(SubmissionFingerprint.submission_id.in_(list(by_id))))} if by_id else {}
    nearest: dict[str, Nearest] = {}
    computed: dict[str, Nearest] = {}
    for sid, row in rows.items():
        if row.nearest is not None:
            nearest[sid] = Nearest(matches=[(str(i), float(s)) for i, s in json.loads(row.nearest)],
                                    compared=row.compared or 0)
        elif budget is None or len(computed) < budget:
            computed[sid] = nearest[sid] = _compare(_earlier(db, row, by_id[sid]))
    others = {i for n in nearest.values() for i, _ in n.matches}
    known = {s.id: s for s in db.scalars(select(Submission).where(Submission.id.in_(others)))} if others else {}
    out: dict[str, SimilarityOut] = {}
    for s in wanted:
        fingerprint = rows.get(s.id)
        n = nearest.get(s.id)
        matches = [SimilarMatch(submission_id=i, candidate=known[i].candidate, created_at=known[i].created_at,
                                score=score, flagged=score >= engine.FLAG_THRESHOLD)
                   for i, score in (n.matches if n else []) if i in known]  # a deleted submission drops out
        best = (matches[0].score if matches else 0.0) if n is not None else None
        out[s.id] = SimilarityOut(fingerprinted=fingerprint is not None,
                                  template_distance=fingerprint.template_distance if fingerprint else None,
                                  nearest=matches, best_score=best,
                                  flagged=best is not None and best >= engine.FLAG_THRESHOLD,
                                  compared=n.compared if n is not None else None, threshold=engine.FLAG_THRESHOLD)
    return out, computed
