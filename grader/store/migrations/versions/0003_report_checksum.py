"""Reports carry a SHA-256 checksum of their stored JSON, so a report changed after it was written is detected.

Existing reports are backfilled by hashing the JSON they hold now: what was stored before this migration
is taken as written.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 10:30:00.000000
"""
import hashlib
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0003'
down_revision: Union[str, None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

BATCH = 500


def upgrade() -> None:
    with op.batch_alter_table('reports', schema=None) as batch_op:
        batch_op.add_column(sa.Column('checksum', sa.String(length=64), nullable=True))
    reports = sa.table('reports', sa.column('submission_id', sa.String()), sa.column('report_json', sa.Text()),
                       sa.column('checksum', sa.String()))
    connection = op.get_bind()
    last = ''
    while True:  # in batches keyed on the primary key: a large table never sits in memory at once
        rows = connection.execute(sa.select(reports.c.submission_id, reports.c.report_json)
                                  .where(reports.c.checksum.is_(None), reports.c.submission_id > last)
                                  .order_by(reports.c.submission_id).limit(BATCH)).all()
        if not rows:
            break
        for submission_id, report_json in rows:
            connection.execute(reports.update().where(reports.c.submission_id == submission_id).values(
                checksum=hashlib.sha256(report_json.encode('utf-8')).hexdigest()))
        last = rows[-1][0]


def downgrade() -> None:
    with op.batch_alter_table('reports', schema=None) as batch_op:
        batch_op.drop_column('checksum')
