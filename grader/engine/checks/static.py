"""Static findings: what a submission imports, read from its syntax tree (never by running it).

The sandbox is what actually keeps torch away from a numpy-only exercise; this
pass is what lets the report say why a submission failed ("imports torch on
line 3") and lets scoring zero the gradient tests of a from-scratch exercise.
"""

from __future__ import annotations

import ast
import threading

from grader.engine.report import Finding

# CPython 3.11 keeps the AST constructor's recursion depth in one per-interpreter counter: two threads building
# syntax trees at once (a page rendering a report while a worker grades) corrupt it, and one of them gets
# "SystemError: AST constructor recursion depth mismatch". Every tree the grader builds is built under this lock
# (the standard library's own parses, such as traceback formatting's, are not: parse_tree retries once).
# Reentrant, so a parse that triggers a garbage collection whose finalizer parses again cannot deadlock.
_AST_LOCK = threading.RLock()


def parse_tree(text: str, name: str = "<unknown>") -> ast.Module | None:
    """The syntax tree of `text`, or None when it cannot be had: a syntax error, a null byte (ValueError), or code
    that exhausts the parser (a long `1+1+...` is a RecursionError, a long run of unary minus a MemoryError).

    The one safe parse of a candidate's code for every layer that reads it (findings here, the report pages).
    """
    for attempt in range(2):
        try:
            with _AST_LOCK:
                return ast.parse(text, filename=name)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
        except SystemError:
            # The lock orders the grader's own parses; the standard library parses too (traceback formatting
            # does, for its carets), so a collision with it is still possible: once more, then give up.
            if attempt:
                return None
    return None


def parse_error(files: dict[str, str], entry: str) -> Finding | None:
    """A syntax error in any file, with its line; None when every file parses."""
    for name, text in files.items():
        if not name.endswith(".py"):
            continue
        try:
            # A full compile (never run) also catches compile-time errors ast.parse lets through,
            # such as a misplaced `from __future__` import.
            compile(text, name, "exec", dont_inherit=True)
        except SyntaxError as exc:
            return Finding(kind="syntax", severity="error", line=exc.lineno,
                           message=f"{name} does not compile: {exc.msg} (line {exc.lineno})")
        except (ValueError, RecursionError, MemoryError) as exc:
            return Finding(kind="syntax", severity="error", message=f"{name} cannot be parsed: {type(exc).__name__}")
    return None


def _module_of_call(node: ast.Call) -> str | None:
    """`__import__("x")` and `importlib.import_module("x")` with a literal name."""
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
    if name in ("__import__", "import_module") and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def forbidden_imports(files: dict[str, str], forbidden: tuple[str, ...]) -> list[Finding]:
    findings: list[Finding] = []
    if not forbidden:
        return findings
    for name, text in sorted(files.items()):
        if not name.endswith(".py"):
            continue
        tree = parse_tree(text, name)
        if tree is None:
            continue
        for node in ast.walk(tree):
            modules: list[str] = []
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module]
            elif isinstance(node, ast.Call):
                mod = _module_of_call(node)
                modules = [mod] if mod else []
            for mod in modules:
                top = mod.split(".")[0]
                if top in forbidden:
                    findings.append(Finding(
                        kind="forbidden-import", severity="error", line=getattr(node, "lineno", None),
                        message=f"{name} imports {top} (line {getattr(node, 'lineno', '?')}): this exercise is "
                                f"numpy only; {top} is not available in its sandbox and the gradient tests score zero"))
    return findings
