"""What a submission's files and a person's text may be: one rule set, one wording, for every way in.

The API (JSON and multipart), the pages, the CLI's folder reader and the engine
itself validate through these types and functions, so a name or a text is
accepted or refused the same way everywhere, with the same message:

- `FileName`: a plain Python module name (letters, digits, underscores, `.py`), or
  one Jupyter notebook named the same way with `.ipynb`;
  this rules out folders, '..', leading dots, spaces, NULs and newlines in one rule.
- `FileText`: text a database and a compiler can hold: valid UTF-8 (no unpaired
  surrogate, which JSON can smuggle in as an escape) and no NUL character.
- `Files`: a name -> text mapping whose every entry is both, with messages that name the file.
- `PlainText`: the same text rule for what people type (notes, reasons, names).

A notebook (`name.ipynb`, or a notebook's JSON sent as solution.py) is converted by
`check_submission` into the entry solution.py (`grader.engine.notebook`), so what is
stored, graded and shown is that script, never the notebook's outputs.

A refusal is a pydantic error of one of `ERROR_TYPES` whose message is the whole
sentence to show; `check_*` raise it as `InvalidRequest` (a 400, or exit 2 in the CLI).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, NoReturn

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError, ValidationInfo
from pydantic_core import ErrorDetails, PydanticCustomError

from grader.engine import notebook
from grader.errors import InvalidRequest

ENTRY = "solution.py"
NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]{0,95}\.(?:py|ipynb)"
_NAME = re.compile(NAME_PATTERN)  # always matched whole (fullmatch): a trailing newline is not a name
NAME_RULE = ("use a plain module name like helpers.py (letters, digits and underscores, ending in .py; "
             "no folders, no '..'), or one notebook named like solution.ipynb")
ERROR_TYPES = frozenset({"file_name", "file_text"})


def name_problem(name: object) -> str | None:
    """Why `name` is not a file name a submission may use, or None when it is one."""
    if isinstance(name, str) and _NAME.fullmatch(name):
        return None
    return f"file name {name!r} is not allowed: {NAME_RULE}"


def utf8_problem(text: str, what: str) -> str | None:
    """Why `text` is not valid UTF-8 (a lone surrogate from a JSON escape), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"{what} is not valid UTF-8 text: unpaired surrogate {text[exc.start]!r} at character {exc.start}; "
                "send the text as UTF-8")
    return None


def text_problem(text: object, what: str) -> str | None:
    """Why `text` is not plain text (a string of valid UTF-8 without NUL), or None; `what` names it."""
    if not isinstance(text, str):
        return f"{what} must be text"
    if "\x00" in text:
        return f"{what} contains a NUL character: send plain text"
    return utf8_problem(text, what)


def _refuse(kind: str, message: str) -> PydanticCustomError:
    # The template is the finished sentence; braces in a candidate's name must not be read as fields.
    return PydanticCustomError(kind, "{message}", {"message": message})


def _what(info: ValidationInfo, default: str) -> str:
    context = info.context if isinstance(info.context, Mapping) else {}
    return str(context.get("what") or info.field_name or default)


def _valid_name(name: str) -> str:
    problem = name_problem(name)
    if problem:
        raise _refuse("file_name", problem)
    return name


def _valid_text(text: str, info: ValidationInfo) -> str:
    problem = text_problem(text, _what(info, "the text"))
    if problem:
        raise _refuse("file_text", problem)
    return text


def _valid_files(files: dict[str, str]) -> dict[str, str]:
    for name, text in files.items():
        problem = name_problem(name)
        if problem:
            raise _refuse("file_name", problem)
        problem = text_problem(text, name)
        if problem:
            raise _refuse("file_text", problem)
    return files


FileName = Annotated[str, AfterValidator(_valid_name),
                     Field(description="a plain module name like helpers.py",
                           json_schema_extra={"pattern": f"^{NAME_PATTERN}$"})]
FileText = Annotated[str, AfterValidator(_valid_text)]
PlainText = FileText  # the same rule for what people type: notes, reasons, a candidate's name
Files = Annotated[dict[str, str], AfterValidator(_valid_files),
                  Field(description="file name -> text; names are plain module names like helpers.py",
                        json_schema_extra={"propertyNames": {"pattern": f"^{NAME_PATTERN}$"}})]

_FILES: TypeAdapter[dict[str, str]] = TypeAdapter(Files)
_TEXT: TypeAdapter[str] = TypeAdapter(PlainText)


def describe_errors(errors: Iterable[ErrorDetails], limit: int = 5) -> str:
    """One readable sentence per problem: these types' messages as they are (each names its subject),
    any other pydantic error with where it happened."""
    errors = list(errors)
    parts = [e["msg"] if e["type"] in ERROR_TYPES else f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
             for e in errors[:limit]]
    more = len(errors) - limit
    return "; ".join(dict.fromkeys(parts)) + (f" (and {more} more)" if more > 0 else "")


def only_rule_errors(errors: Iterable[ErrorDetails]) -> bool:
    """Whether every error came from these types (their messages need no other framing)."""
    kinds = [e["type"] for e in errors]
    return bool(kinds) and all(k in ERROR_TYPES for k in kinds)


def _raise(exc: ValidationError) -> NoReturn:
    raise InvalidRequest(describe_errors(exc.errors())) from None


def check_files(files: Mapping[str, Any]) -> dict[str, str]:
    """`files` as a plain dict when every name is a `FileName` and every text a `FileText`; else InvalidRequest."""
    try:
        return _FILES.validate_python(dict(files))
    except ValidationError as exc:
        _raise(exc)


def check_text(text: str, what: str) -> str:
    """`text` when it is `PlainText`; else InvalidRequest naming it as `what` ("the note")."""
    try:
        return _TEXT.validate_python(text, context={"what": what})
    except ValidationError as exc:
        _raise(exc)


def decode_text(data: bytes, what: str) -> str:
    """Bytes from a file or an upload as UTF-8 text; else InvalidRequest saying where it breaks."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"{what} is not UTF-8 text (invalid byte at offset {exc.start}); "
                             "save it as UTF-8") from None


def _convert_notebooks(files: dict[str, str], entry: str, max_code_bytes: int) -> dict[str, str]:
    """`files` with its one notebook (a .ipynb, or a notebook's JSON sent as the entry) turned into the entry."""
    notebooks = sorted(n for n in files if notebook.is_notebook_name(n))
    for name, text in files.items():
        if name != entry and not notebook.is_notebook_name(name) and notebook.looks_like_notebook(text):
            raise InvalidRequest(f"{name} is a Jupyter notebook, not Python: send the notebook as solution.ipynb "
                                 "(it becomes the entry), or export it as a .py file")
    if len(notebooks) > 1:
        raise InvalidRequest(f"send one notebook at most (got {', '.join(notebooks)}): it becomes {entry}")
    if notebooks and entry in files:
        raise InvalidRequest(f"send either {entry} or a notebook ({notebooks[0]}), not both: the notebook "
                             f"becomes {entry}")
    if notebooks:
        source, name = files[notebooks[0]], notebooks[0]
    elif entry in files and notebook.looks_like_notebook(files[entry]):
        source, name = files[entry], f"{entry} (a Jupyter notebook)"
    else:
        return files
    script = notebook.convert(source, name, max_code_bytes)
    problem = text_problem(script, f"the code cells of {name}")
    if problem:
        raise InvalidRequest(problem)
    converted = {n: t for n, t in files.items() if n not in notebooks}
    converted[entry] = script
    return converted


def check_submission(files: Mapping[str, Any], entry: str, *, max_files: int, max_code_bytes: int) -> dict[str, str]:
    """Every rule a submission's files meet before grading, in the order a person would fix them.

    A notebook is converted here into `entry` (see `grader.engine.notebook`): the limits on sizes
    then count its code, not its outputs; its own limits are `notebook.MAX_NOTEBOOK_BYTES` and
    `notebook.MAX_CELLS`.
    """
    if len(files) > max_files:
        raise InvalidRequest(f"too many files: {len(files)}; the limit is {max_files}")
    checked = _convert_notebooks(check_files(files), entry, max_code_bytes)
    if entry not in checked:
        raise InvalidRequest(f"the entry file {entry} is missing: name the main file {entry}, or send one "
                             f"notebook (.ipynb) (got {', '.join(sorted(checked)) or 'no files'})")
    if not checked[entry].strip():
        raise InvalidRequest(f"{entry} is empty: send the code of the solution")
    total_bytes = sum(len(t.encode("utf-8")) for t in checked.values())
    if total_bytes > max_code_bytes:
        raise InvalidRequest(f"the code is too large: {total_bytes} bytes; the limit is "
                             f"{max_code_bytes} bytes for all files together")
    return checked
