"""Similarity across submissions: each submission's fingerprint, and the earlier submissions it resembles.

The fingerprint (grader.engine.similarity) of the entry file is computed when a submission is accepted and
stored with it in the same transaction (`fingerprints`, one row per submission; migration 0004 fingerprinted
the older ones). A file that does not parse gets no row, and one whose fingerprint has more than `MAX_HASHES`
hashes is stored as too large to compare (`too_large`, no hashes): either way the submission is accepted and
graded as any other, and nothing is ever said to the candidate about it.

Which earlier submissions of the same problem a submission resembles is computed once, the first time an
interviewer reads it or a list shows it (at most `LIST_BUDGET` per list page), and stored: not when it is
accepted (the comparison is CPU-bound work the submitter does not wait for). The read collects the earlier
fingerprints inside its session (`collect`), and compares them after the session has ended, outside any
transaction, then stores the result in a short one of its own (`finish`, `save`): no write lock is held while
comparing. Earlier submissions never change, so the answer does not either (for one fingerprint version and
template). The comparison is bounded: the `MAX_COMPARED` most recent earlier submissions of the problem, not
too large, and not the same candidate's own earlier attempts (same non-empty name: a resubmission is no copy),
each at most `MAX_HASHES` hashes (typically under 200). Measured: 0.1 s to read 2000 fingerprints and 0.3 to
0.5 s to compare them on 2 cores busy with a CI run; converting and comparing 2000 mlp solutions held in memory
takes 0.1 s on one idle core. Code of the problem's starter template is ignored on both sides, as
`grader similarity --problem` does.

Only interviewers and admins see any of it: submitters never learn of other candidates' submissions.
"""

from __future__ import annotations

import json
import logging
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
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
# A fingerprint with more hashes than this is stored as too large to compare (no hashes kept, never compared nor
# compared with): the catalog's largest solution has 371 (reference/cnn.py), a typical one about 175, a 253 KB
# file about 13,000. Bounds what one comparison reads: MAX_COMPARED rows of at most MAX_HASHES hashes each.
MAX_HASHES = 4000
_STREAM = 200  # earlier fingerprints fetched from the database at a time


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
    too_large = len(fp.hashes) > MAX_HASHES
    return SubmissionFingerprint(submission_id=submission_id, version=fp.version, k=fp.k, w=fp.w,
                                 hashes="[]" if too_large else json.dumps(fp.hashes, separators=(",", ":")),
                                 template_distance=distance, too_large=too_large)


@dataclass(frozen=True)
class Nearest:
    matches: list[tuple[str, float]]
    compared: int


@dataclass(frozen=True)
class _Other:
    submission_id: str
    candidate: str | None
    created_at: datetime
    hashes: array[int]  # 8 bytes a hash, not a Python int each


@dataclass(frozen=True)
class _Earlier:
    """What a comparison needs, read from the store; the comparison itself runs outside any transaction."""

    problem_id: str
    k: int
    w: int
    version: int
    hashes: str
    others: list[_Other]  # most recent first


def _earlier(db: Session, row: SubmissionFingerprint, submission: Submission) -> _Earlier:
    """The fingerprints of the `MAX_COMPARED` most recent earlier submissions of the problem (same version, not
    too large), leaving out the same candidate's own earlier attempts (by the candidate's name: one CI token is
    shared by many candidates). Only the columns needed, fetched `_STREAM` rows at a time, each kept as an
    array of 8-byte hashes: at most MAX_COMPARED x MAX_HASHES x 8 bytes (64 MB), typically under 3 MB."""
    conditions = [Submission.problem_id == submission.problem_id, Submission.id != submission.id,
                  SubmissionFingerprint.version == row.version,
                  SubmissionFingerprint.k == row.k, SubmissionFingerprint.w == row.w,
                  SubmissionFingerprint.too_large.is_(False),
                  or_(Submission.created_at < submission.created_at,
                      and_(Submission.created_at == submission.created_at, Submission.id < submission.id))]
    if submission.candidate and submission.candidate.strip():
        conditions.append(or_(Submission.candidate.is_(None), Submission.candidate != submission.candidate))
    result = db.execute(
        select(SubmissionFingerprint.submission_id, Submission.candidate, Submission.created_at,
               SubmissionFingerprint.hashes)
        .join(Submission, Submission.id == SubmissionFingerprint.submission_id)
        .where(*conditions)
        .order_by(Submission.created_at.desc(), Submission.id.desc()).limit(MAX_COMPARED)
        .execution_options(yield_per=_STREAM))
    others = [_Other(str(i), c, t, array("Q", json.loads(h))) for i, c, t, h in result]
    return _Earlier(problem_id=submission.problem_id, k=row.k, w=row.w, version=row.version, hashes=row.hashes,
                    others=others)


def _multiset(hashes: Iterable[int], ignored: set[int]) -> Counter[int]:
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
    ranked: list[tuple[float, int, str, array[int]]] = []
    for order, other in enumerate(earlier.others):
        theirs = _multiset(other.hashes, ignored)
        shared = sum(min(mine[h], theirs[h]) for h in mine.keys() & theirs.keys())
        if shared:
            ranked.append((shared / (mine_size + theirs.total() - shared), -order, other.submission_id,
                           other.hashes))
    ranked.sort(reverse=True)

    def as_fingerprint(hashes: Iterable[int]) -> engine.Fingerprint:
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


@dataclass(frozen=True)
class _Stored:
    template_distance: float | None
    too_large: bool


@dataclass
class Collected:
    """What a read gathered inside its session for the similarity views; `finish` compares what was not
    compared yet after that session has ended (a session holds SQLite's write lock), then saves it."""

    order: list[str]
    fingerprints: dict[str, _Stored] = field(default_factory=dict)
    nearest: dict[str, Nearest] = field(default_factory=dict)
    to_compare: dict[str, _Earlier] = field(default_factory=dict)
    known: dict[str, tuple[str | None, datetime]] = field(default_factory=dict)  # id -> (candidate, created_at)


def collect(db: Session, submissions: Iterable[Submission], *, budget: int | None = None) -> Collected:
    """Inside the caller's session: the stored similarity of these submissions, and the earlier fingerprints
    of those not compared yet, at most `budget` of them (None: all); the others show `best_score` null."""
    wanted = list(submissions)
    by_id = {s.id: s for s in wanted}
    out = Collected(order=list(by_id))
    if not by_id:
        return out
    rows = db.scalars(select(SubmissionFingerprint).where(SubmissionFingerprint.submission_id.in_(list(by_id))))
    for row in rows:
        sid = row.submission_id
        out.fingerprints[sid] = _Stored(row.template_distance, bool(row.too_large))
        if row.too_large:
            continue  # never compared
        if row.nearest is not None:
            out.nearest[sid] = Nearest(matches=[(str(i), float(s)) for i, s in json.loads(row.nearest)],
                                       compared=row.compared or 0)
        elif budget is None or len(out.to_compare) < budget:
            out.to_compare[sid] = _earlier(db, row, by_id[sid])
    others = {i for n in out.nearest.values() for i, _ in n.matches}
    if others:
        out.known = {str(i): (c, t) for i, c, t in db.execute(
            select(Submission.id, Submission.candidate, Submission.created_at).where(Submission.id.in_(others)))}
    return out


def finish(store: Store, collected: Collected) -> dict[str, SimilarityOut]:
    """After the caller's session: compare what `collect` gathered (outside any transaction), save it (best
    effort), and return submission id -> its similarity view (for interviewers)."""
    computed = {sid: _compare(earlier) for sid, earlier in collected.to_compare.items()}
    save(store, computed)
    nearest = {**collected.nearest, **computed}
    known = dict(collected.known)
    for earlier in collected.to_compare.values():
        known.update((o.submission_id, (o.candidate, o.created_at)) for o in earlier.others)
    out: dict[str, SimilarityOut] = {}
    for sid in collected.order:
        fingerprint = collected.fingerprints.get(sid)
        n = nearest.get(sid)
        matches = [SimilarMatch(submission_id=i, candidate=known[i][0], created_at=known[i][1],
                                score=score, flagged=score >= engine.FLAG_THRESHOLD)
                   for i, score in (n.matches if n else []) if i in known]  # a deleted submission drops out
        best = (matches[0].score if matches else 0.0) if n is not None else None
        out[sid] = SimilarityOut(fingerprinted=fingerprint is not None,
                                 template_distance=fingerprint.template_distance if fingerprint else None,
                                 nearest=matches, best_score=best,
                                 flagged=best is not None and best >= engine.FLAG_THRESHOLD,
                                 compared=n.compared if n is not None else None, threshold=engine.FLAG_THRESHOLD,
                                 too_large=bool(fingerprint and fingerprint.too_large))
    return out
