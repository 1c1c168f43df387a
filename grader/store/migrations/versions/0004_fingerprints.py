"""Submissions carry a similarity fingerprint of their entry file (a table of its own, one row per submission).

Existing submissions are fingerprinted here, in batches keyed on the submission id as 0003 does, from the entry
file stored with them, with their distance from the problem's starter template. A file that does not parse gets
no row. A fingerprint of more than MAX_HASHES hashes is stored as too large to compare (`too_large`, no hashes),
as the service does (grader.service.similarity.MAX_HASHES). Which earlier submissions each one resembles is left
to the service (`nearest` stays NULL): it is computed the first time an interviewer reads the submission or a
list shows it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 14:00:00.000000
"""
import json
import logging
from datetime import UTC, datetime
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0004'
down_revision: Union[str, None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

BATCH = 500
MAX_HASHES = 4000  # grader.service.similarity.MAX_HASHES when this migration was written
log = logging.getLogger(__name__)


def upgrade() -> None:
    op.create_table('fingerprints',
    sa.Column('submission_id', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('k', sa.Integer(), nullable=False),
    sa.Column('w', sa.Integer(), nullable=False),
    sa.Column('hashes', sa.Text(), nullable=False),
    sa.Column('template_distance', sa.Float(), nullable=True),
    sa.Column('nearest', sa.Text(), nullable=True),
    sa.Column('best_score', sa.Float(), nullable=True),
    sa.Column('compared', sa.Integer(), nullable=True),
    sa.Column('too_large', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['submission_id'], ['submissions.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('submission_id')
    )
    # the similarity comparison reads a problem's most recent earlier submissions
    op.create_index('ix_submissions_problem_created', 'submissions', ['problem_id', 'created_at'])
    _backfill(op.get_bind())


def _backfill(connection: sa.engine.Connection) -> None:
    from grader.engine.catalog import get_problem
    from grader.engine.similarity import Fingerprint, distance_from_template, fingerprint

    submissions = sa.table('submissions', sa.column('id', sa.String()), sa.column('problem_id', sa.String()),
                           sa.column('entry', sa.String()))
    files = sa.table('submission_files', sa.column('submission_id', sa.String()), sa.column('name', sa.String()),
                     sa.column('text', sa.Text()))
    fingerprints = sa.table('fingerprints', sa.column('submission_id', sa.String()), sa.column('version', sa.Integer()),
                            sa.column('k', sa.Integer()), sa.column('w', sa.Integer()),
                            sa.column('hashes', sa.Text()), sa.column('template_distance', sa.Float()),
                            sa.column('too_large', sa.Boolean()),
                            sa.column('created_at', sa.DateTime(timezone=True)))
    templates: dict[str, Fingerprint | None] = {}

    def template_of(problem_id: str) -> Fingerprint | None:
        if problem_id not in templates:
            try:
                templates[problem_id] = fingerprint(get_problem(problem_id).template, 'template.py')
            except Exception:  # a problem no longer in the catalog, a template that does not parse
                templates[problem_id] = None
        return templates[problem_id]

    last = ''
    done = skipped = 0
    while True:  # in batches keyed on the primary key: a large table never sits in memory at once
        rows = connection.execute(
            sa.select(submissions.c.id, submissions.c.problem_id, files.c.text)
            .select_from(submissions.join(files, sa.and_(files.c.submission_id == submissions.c.id,
                                                         files.c.name == submissions.c.entry)))
            .where(submissions.c.id > last).order_by(submissions.c.id).limit(BATCH)).all()
        if not rows:
            break
        values = []
        for submission_id, problem_id, source in rows:
            try:
                fp = fingerprint(source, 'solution.py')
            except Exception:  # not Python that parses (NotParsable), or too deep to walk: no fingerprint
                skipped += 1
                continue
            template = template_of(problem_id)
            too_large = len(fp.hashes) > MAX_HASHES
            values.append({'submission_id': submission_id, 'version': fp.version, 'k': fp.k, 'w': fp.w,
                           'hashes': '[]' if too_large else json.dumps(fp.hashes, separators=(',', ':')),
                           'too_large': too_large,
                           'template_distance': distance_from_template(fp, template) if template else None,
                           'created_at': datetime.now(UTC)})
        if values:
            connection.execute(fingerprints.insert(), values)
        done += len(values)
        last = rows[-1][0]
    log.info('fingerprinted %d existing submissions (%d entry files do not parse)', done, skipped)


def downgrade() -> None:
    op.drop_index('ix_submissions_problem_created', table_name='submissions')
    op.drop_table('fingerprints')
