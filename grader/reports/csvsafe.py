"""CSV cells a spreadsheet will not run: the one defusing of every CSV the grader writes.

Spreadsheets run a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return as a
formula (`=HYPERLINK(...)` from a candidate's file name or name); every such cell is written with a
leading single quote. Used by the service's exports (`grader.service.exports`) and by batch
grading's results file (`grader.batch`), which may not import the service.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> str:
    """A cell's text, defused: one that a spreadsheet would read as a formula gets a leading single quote."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text
