"""Jupyter notebooks as submissions: converted at intake into the entry script, mapped back in the report.

Intake (`grader.engine.files.check_submission`, the one validation path of the API, the CLI
and the engine) calls `convert`: the notebook is parsed and validated with nbformat, and its
code cells, in order, become the entry `solution.py` in the "percent" script format:

    # %% grader: a Jupyter notebook converted to a script (code cells only; outputs ignored)
    # %% [cell 1]
    import numpy as np
    pass  # grader dropped line magic: %matplotlib inline
    # %% [cell 3]
    ...

Cells are numbered from the top of the notebook, markdown and raw cells included (the number a
person counts when scrolling). Outputs, markdown, raw cells and metadata are never kept, so
they never reach a sandbox, the store or a report. IPython syntax that is not Python (line
magics `%...`, cell magics `%%...`, shell escapes `!cmd` and `x = !cmd`, help requests `obj?`)
is replaced line for line with `pass` and a fixed comment, so line numbers stay those of the
notebook and a dropped line inside a block leaves the block valid. The continuation lines of a
dropped line that ends with a backslash, and the body of a dropped cell magic, become comment-only
lines (Python ignores them for indentation), so no line is ever written longer than the notebook's
own plus a fixed prefix; the whole script is bounded too (`convert`'s `max_chars`). A cell magic
drops its whole cell (its body is not Python), except %%time and %%capture whose body is Python and
is kept. A line of the notebook that reads like a cell marker or a dropped line outside a string is
changed within its comment (`_escape`), so that it is never read back as one.

The engine recognises a converted entry by its exact first line (`HEADER`) and calls
`annotate`: one finding per dropped line, and every reference to the entry's lines in test
messages and findings also names the notebook cell and line. A .py file that forges the
header and markers gains nothing: only the annotations of its own report change.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

from grader.engine.report import Finding, Report, TestResult
from grader.errors import InvalidRequest

SUFFIX = ".ipynb"
MAX_NOTEBOOK_BYTES = 2 * 1024 * 1024  # the notebook's JSON, outputs included (they are then thrown away)
MAX_CELLS = 1000
MAX_DROPPED_FINDINGS = 20
HEADER = "# %% grader: a Jupyter notebook converted to a script (code cells only; outputs ignored)"
CELL_MARKER = "# %% [cell {n}]"
_CELL_MARKER = re.compile(r"# %% \[cell ([1-9][0-9]{0,5})\]")
_DROPPED = re.compile(r"(?P<indent>[ \t]*)pass  # grader dropped (?P<what>line magic|cell magic|shell escape|"
                      r"help request): (?P<text>.*)")
_BODY = "# grader dropped with its cell magic: "
_CONTINUATION = "# grader dropped with the line above: "  # a continuation line of a dropped line
_ESCAPE = "(a line of the notebook) "  # put into the comment of a notebook line that reads like a marker
_KEEP_BODY_CELL_MAGICS = frozenset({"time", "capture"})  # their body is Python that runs in the notebook's namespace
_NEWLINE = re.compile(r"\r\n|\r|\n")  # the compiler's line breaks; str.splitlines() knows more and would shift lines
_ASSIGNED = re.compile(r"[A-Za-z_][\w.]*(?:\s*,\s*[A-Za-z_][\w.]*)*\s*=\s*(?P<rest>[!%].*)")
_HELP = re.compile(r"\?{1,2}[A-Za-z_][\w.]*|[A-Za-z_][\w.]*\?{1,2}")


def is_notebook_name(name: str) -> bool:
    """Whether a file is a notebook by its name: ends with .ipynb in any case (the one test of it: the reader of
    submission files, batch grading and the engine; a name sent to the service must be lower case anyway)."""
    return name.lower().endswith(SUFFIX)


def looks_like_notebook(text: str) -> bool:
    """Whether `text` (sent as a .py file) is a notebook's JSON: an object with 'cells' and 'nbformat'."""
    stripped = text.lstrip("\ufeff \t\r\n")
    if not stripped.startswith("{") or '"nbformat"' not in text or '"cells"' not in text:
        return False
    try:
        data = json.loads(stripped)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, dict) and "cells" in data and "nbformat" in data


def _load(text: str, name: str) -> list[tuple[int, str, str]]:
    """(position from 1, cell type, source) of every cell of a valid nbformat 4 notebook; else InvalidRequest."""
    import nbformat

    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_NOTEBOOK_BYTES:
        raise InvalidRequest(f"{name} is {size} bytes; a notebook may be at most {MAX_NOTEBOOK_BYTES} bytes "
                             "(clear its outputs: they are ignored anyway)")
    try:
        data = json.loads(text.lstrip("\ufeff"))
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"{name} is not a Jupyter notebook: it is not JSON ({exc.msg} at line {exc.lineno} "
                             f"column {exc.colno}); save it from Jupyter, or send Python code as a .py file") from None
    except RecursionError:
        raise InvalidRequest(f"{name} is not a valid notebook: its JSON nests too deeply") from None
    if not isinstance(data, dict) or "cells" not in data or "nbformat" not in data:
        raise InvalidRequest(f"{name} is not a Jupyter notebook: a notebook is a JSON object with 'nbformat' "
                             "and 'cells'")
    version = data.get("nbformat")
    if version != 4:
        raise InvalidRequest(f"{name} uses nbformat version {str(version)[:20]}; only nbformat 4 notebooks are "
                             "accepted: open and save it with Jupyter 4 or later")
    cells = data.get("cells")
    if not isinstance(cells, list) or not all(isinstance(c, dict) for c in cells):
        raise InvalidRequest(f"{name} is not a valid nbformat 4 notebook: 'cells' must be a list of cells")
    if len(cells) > MAX_CELLS:
        raise InvalidRequest(f"{name} has {len(cells)} cells; a notebook may have at most {MAX_CELLS}")
    try:
        if isinstance(data.get("nbformat_minor"), int) and data["nbformat_minor"] >= 5:
            for position, cell in enumerate(cells, start=1):
                cell.setdefault("id", f"cell-{position}")  # as Jupyter would add it (nbformat would warn)
        nbformat.validate(data)
    except nbformat.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise InvalidRequest(f"{name} is not a valid nbformat 4 notebook: {str(exc.message)[:200]}"
                             f"{f' (at {where})' if where else ''}") from None
    except RecursionError:
        raise InvalidRequest(f"{name} is not a valid notebook: its JSON nests too deeply") from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # a shape nbformat's own code trips over
        raise InvalidRequest(f"{name} is not a valid nbformat 4 notebook ({type(exc).__name__})") from None
    result = []
    for position, cell in enumerate(data["cells"], start=1):
        source = cell.get("source", "")
        result.append((position, str(cell.get("cell_type")), source if isinstance(source, str) else "".join(source)))
    return result


@dataclass
class _Scanner:
    """Where Python's lexer stands between lines: inside brackets, a string, or a backslash continuation.

    Linear in the cell's length (a tokenizer run per line would be quadratic on a long literal). Only what
    decides whether a line starts a statement is tracked: a '%' or '!' line inside one is Python, not IPython.
    """

    depth: int = 0
    quote: str = ""  # the open string's quote: one or three ' or ", or "" outside strings
    continued: bool = False

    @property
    def at_statement_start(self) -> bool:
        return not (self.depth or self.quote or self.continued)

    def feed(self, line: str) -> None:
        i, n, self.continued = 0, len(line), False
        while i < n:
            c = line[i]
            if self.quote:
                if c == "\\":
                    i += 2
                    continue
                if line.startswith(self.quote, i):
                    i += len(self.quote)
                    self.quote = ""
                    continue
                i += 1
                continue
            if c == "#":
                break
            if c in "'\"":
                self.quote = c * 3 if line.startswith(c * 3, i) else c
                i += len(self.quote)
                continue
            if c in "([{":
                self.depth += 1
            elif c in ")]}":
                self.depth = max(0, self.depth - 1)
            elif c == "\\" and i == n - 1:
                self.continued = True
            i += 1
        if len(self.quote) == 1 and not line.endswith("\\"):
            self.quote = ""  # an unterminated one-line string: the compiler reports it; the next line is new


def _ipython_kind(stripped: str) -> str | None:
    if stripped.startswith("%%"):
        return "cell magic"
    if stripped.startswith("%"):
        return "line magic"
    if stripped.startswith("!"):
        return "shell escape"
    assigned = _ASSIGNED.fullmatch(stripped)
    if assigned:
        return "shell escape" if assigned.group("rest").startswith("!") else "line magic"
    if _HELP.fullmatch(stripped):
        return "help request"
    return None


def _cell_lines(source: str) -> list[str]:
    lines = _NEWLINE.split(source)
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _keeps_body(head: str) -> bool:
    """Whether cell magic line `head` ('%%time') runs its body as Python in the notebook's namespace."""
    words = head.strip()[2:].split(None, 1)
    return bool(words) and words[0] in _KEEP_BODY_CELL_MAGICS


def _escape(line: str) -> str:
    """A notebook's own line (outside strings) that `LineMap` would read as a cell marker or a dropped line,
    changed within its comment only; any other line unchanged."""
    if _CELL_MARKER.fullmatch(line):
        return f"# {_ESCAPE}{line[2:]}"
    found = _DROPPED.fullmatch(line)
    if found:
        return f"{found.group('indent')}pass  # {_ESCAPE}{line[len(found.group('indent')) + 8:]}"
    return line


def _convert_cell(source: str) -> Iterator[str]:
    """The script lines of a code cell, one for each of its lines."""
    lines = _cell_lines(source)
    start = 0
    if lines and lines[0].strip().startswith("%%"):
        yield f"pass  # grader dropped cell magic: {lines[0].strip()}"
        if not _keeps_body(lines[0]):
            for line in lines[1:]:
                yield _BODY + line
            return
        start = 1
    scanner = _Scanner()
    continued = False  # the previous line was a dropped one (or its continuation) ending with a backslash
    for line in lines[start:]:
        stripped = line.strip()
        if continued:  # the rest of a dropped line: a comment, which leaves blocks valid whatever its indentation
            yield _CONTINUATION + stripped
            continued = stripped.endswith("\\")
            continue
        kind = _ipython_kind(stripped) if scanner.at_statement_start and stripped else None
        if kind is not None:
            kind = "line magic" if kind == "cell magic" else kind  # '%%' after a cell's first line
            indent = line[:len(line) - len(line.lstrip())]
            yield f"{indent}pass  # grader dropped {kind}: {stripped}"
            continued = stripped.endswith("\\")
            continue
        yield line if scanner.quote else _escape(line)
        scanner.feed(line)


def _is_code(line: str) -> bool:
    return bool(line.strip()) and not _DROPPED.fullmatch(line) and not line.startswith((_BODY, _CONTINUATION))


def convert(text: str, name: str, max_chars: int = MAX_NOTEBOOK_BYTES) -> str:
    """The entry script of notebook `text` (named `name` in messages); InvalidRequest when it is not a usable one.

    The script may be at most max(len(text), `max_chars`) characters: an InvalidRequest as soon as it is longer
    (the caller passes its limit on code bytes, which a longer script would exceed anyway).
    """
    cells = _load(text, name)
    limit = max(len(text), max_chars)
    script = [HEADER]
    size = len(HEADER) + 1
    has_code = False
    for position, cell_type, source in cells:
        if cell_type != "code":
            continue
        marker = CELL_MARKER.format(n=position)
        script.append(marker)
        size += len(marker) + 1
        for line in _convert_cell(source):
            size += len(line) + 1
            if size > limit:
                raise InvalidRequest(f"{name} converts to a script of more than {limit} characters: the code of "
                                     "its cells is too large")
            has_code = has_code or _is_code(line)
            script.append(line)
    if len(script) == 1:
        raise InvalidRequest(f"{name} has no code cells: put the solution's code in code cells")
    if not has_code:
        raise InvalidRequest(f"{name} has no code: its code cells are empty or hold only magics and shell commands")
    return "\n".join(script) + "\n"


@dataclass(frozen=True)
class LineMap:
    """Where each line of a converted entry came from: script line -> (notebook cell, line in the cell)."""

    cells: dict[int, tuple[int, int]]
    dropped: list[tuple[int, str, str]]  # (script line, what, original text)

    @classmethod
    def of(cls, script: str) -> LineMap | None:
        """The map of a converted entry, or None when `script` does not start with the exact header line."""
        if _NEWLINE.split(script, maxsplit=1)[0] != HEADER:  # a .py entry costs one look at its first line
            return None
        lines = _NEWLINE.split(script)
        cells: dict[int, tuple[int, int]] = {}
        dropped: list[tuple[int, str, str]] = []
        cell, in_cell = 0, 0
        for number, line in enumerate(lines[1:], start=2):
            marker = _CELL_MARKER.fullmatch(line)
            if marker:
                cell, in_cell = int(marker.group(1)), 0
                continue
            if not cell:
                continue
            in_cell += 1
            cells[number] = (cell, in_cell)
            found = _DROPPED.fullmatch(line)
            if found:
                dropped.append((number, found.group("what"), found.group("text")))
        return cls(cells, dropped)

    def where(self, line: int) -> str | None:
        found = self.cells.get(line)
        return f"notebook cell {found[0]}, line {found[1]}" if found else None


def _rewrite(message: str, entry: str, lines: LineMap) -> str:
    """`message` with each reference to a line of the entry followed by its notebook cell and line."""
    name = re.escape(entry)

    def traceback_ref(m: re.Match[str]) -> str:
        where = lines.where(int(m.group(1)))
        return f"{m.group(0)} ({where})" if where else m.group(0)

    def file_ref(m: re.Match[str]) -> str:
        where = lines.where(int(m.group(1)))
        return f"{m.group(0)}; {where}" if where else m.group(0)

    message = re.sub(rf'(?<![\w.]){name}", line (\d+)', traceback_ref, message)
    message = re.sub(rf"(?<![\w.]){name}, line (\d+)", file_ref, message)
    if message.startswith(entry + " "):  # "solution.py does not compile: ... (line 3)"
        message = re.sub(r"\(line (\d+)(?=\))", file_ref, message)
    return message


def _names_other_file(message: str, entry: str) -> bool:
    return bool(re.match(r"[A-Za-z_]\w*\.py ", message)) and not message.startswith(entry + " ")


def _annotate_test(test: TestResult, entry: str, lines: LineMap) -> TestResult:
    message = _rewrite(test.message, entry, lines)
    details = dict(test.details)
    line = details.get("line")
    if type(line) is int:
        where = lines.where(line)
        other_file = re.search(rf"(?<![\w.])(?!{re.escape(entry)})[A-Za-z_]\w*\.py\"?, line {line}\b", message)
        if where and not other_file:
            if "notebook cell" not in message:
                message = f"{message} ({entry}, line {line}; {where})" if message else f"{entry}, line {line}; {where}"
            cell, in_cell = lines.cells[line]
            details.update(notebook_cell=cell, notebook_line=in_cell)
    if message == test.message and details == test.details:
        return test
    return test.model_copy(update={"message": message, "details": details})


def _annotate_finding(finding: Finding, entry: str, lines: LineMap) -> Finding:
    message = _rewrite(finding.message, entry, lines)
    if finding.line is not None and "notebook cell" not in message and not _names_other_file(message, entry):
        where = lines.where(finding.line)
        if where:
            message = f"{message} ({where})"
    return finding if message == finding.message else finding.model_copy(update={"message": message})


def annotate(report: Report, files: dict[str, str], entry: str) -> Report:
    """`report` unchanged for a .py entry; for a converted notebook, its dropped lines as findings and every
    line reference of the entry also naming the notebook cell and line."""
    lines = LineMap.of(files.get(entry, ""))
    if lines is None:
        return report
    tests = [_annotate_test(t, entry, lines) for t in report.tests]
    findings = [_annotate_finding(f, entry, lines) for f in report.findings]
    notes = [Finding(kind="notebook", severity="info",
                     message=f"{entry} was converted from a Jupyter notebook: its code cells in order, outputs "
                             f"ignored; '{entry}, line N' is followed by the notebook cell and line it came from "
                             "(cells are counted from the top of the notebook, markdown cells included)")]
    for number, what, text in lines.dropped[:MAX_DROPPED_FINDINGS]:
        cell, in_cell = lines.cells[number]
        effect = ("it and the rest of its cell were not run" if what == "cell magic" and not _keeps_body(text)
                  else "it was not run")
        notes.append(Finding(kind="notebook", severity="warning", line=number,
                             message=f"notebook cell {cell}, line {in_cell}: the IPython {what} {text[:120]!r} was "
                                     f"dropped ({entry}, line {number}); {effect}: grading runs plain Python"))
    more = len(lines.dropped) - MAX_DROPPED_FINDINGS
    if more > 0:
        notes.append(Finding(kind="notebook", severity="warning",
                             message=f"{more} more IPython line(s) were dropped (not listed)"))
    return report.model_copy(update={"tests": tests, "findings": [*findings, *notes]})
