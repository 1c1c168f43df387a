"""Similarity of two submissions: normalized-AST fingerprints, winnowed as MOSS does.

Three steps, each a function of its own so the service can store the middle one:

1. `tokens`: the file is parsed (stdlib `ast`; comments and formatting vanish there) and cut
   into units, one per top-level function, one per method (`Class.method`), one for a class's
   other statements and one for the module's statements outside any definition (these two sorted
   statement by statement, as their order rarely matters). Each unit becomes a token stream: the
   node types of its tree in pre-order, with
   - docstrings, bare string statements, `pass`, imports and type annotations dropped, and the
     commonest padding of a copy with them: code that cannot run (`if False:`, `while 0:`),
     `assert True`, and assignments to names the function never reads;
   - literals reduced to their kind (`num` for int, float and complex alike, `str`, `bytes`;
     `True`, `False`, `None` and `...` kept, they are not a matter of taste);
   - the candidate's own names (parameters, locals, the module's functions, classes and globals,
     attributes of `self`, keyword arguments of calls to the candidate's own functions) reduced
     to their role: `$v` inside a function, `$g` for a module-level definition, `$attr`;
   - the names everyone shares kept: attributes (`.shape`, `.T`, `.sum`), keyword arguments of
     library calls (`axis=`, `keepdims=`), builtins (`range`, `len`), and modules by their full
     path whatever their alias (`np`, `numpy` and `from numpy import *` all read `numpy`);
   - blocks bracketed by `{` and `}`, so that nesting is part of the stream.
   Local names are not numbered by first appearance (`$v0`, `$v1`, ...): one variable of dead
   code at the top of a function would shift every number after it and break every k-gram of
   the function, which is the cheapest disguise there is. The role alone keeps the stream
   unchanged by any renaming; what tells solutions apart is the structure and the library calls.
2. `fingerprint`: each unit's k-grams of tokens are hashed (blake2b, stable across processes and
   machines, unlike `hash()`), and winnowing (Schleimer, Wilkerson and Aiken, SIGMOD 2003) keeps
   the minimum hash of every window of `w` consecutive hashes. Any run of at least `w + k - 1`
   tokens shared by two units leaves at least one shared fingerprint; no run under `k` does. The
   units' fingerprints together form a multiset: k-grams never cross a unit's boundary, so
   functions in another order give the same fingerprint.
3. `similarity`: the Jaccard index of the two multisets, |A ∩ B| / |A ∪ B| (counts taken into
   account): 1 for files that normalize alike, 0 for nothing in common, symmetric, and an added
   or dropped function lowers it in proportion to its size. Containment, |A ∩ B| / min(|A|, |B|),
   was not chosen: a three-line file is entirely contained in any solution that has the same
   three lines, and would score 1 against it. Fingerprints found in the problem's starter
   template can be ignored (`template=`), so code handed to every candidate is not evidence.

`similarity_main` is the `grader similarity A B [--problem ID]` command; `register` adds it to the
CLI's subcommands. A file that cannot be read or parsed is `NotParsable` (an `InvalidRequest`: its
message names the file and the line, safe to show) and never a traceback.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from grader.errors import InvalidRequest

VERSION = 1
# k and w measured on the catalog's solutions (tests/test_similarity.py): k = 8 tokens is about one
# statement, so a shared k-gram is more than a shared idiom; w = 6 keeps about 2 / (w + 1) of the
# k-grams and still guarantees that any 13 tokens in common are seen. Among k in 6..14 and w in
# 4..8, this pair left the widest gap between the disguised copies' lowest score and the
# independent solutions' highest (on gan, whose files are the shortest and the most alike).
K_TOKENS = 8
WINDOW = 6
# A likely copy at and above this score. Measured: pairs of independent correct solutions of one
# exercise score at most 0.25, copies disguised by renaming, reordering, reformatting, changed
# literals and a few inserted statements at least 0.63 (tests/test_similarity.py prints both).
FLAG_THRESHOLD = 0.5
# Hashes kept to 53 bits: exact as a JSON number in any language (a JavaScript double included).
_HASH_BITS = 53
_MODULE_UNIT = "<module>"
_DROPPED_FIELDS = frozenset({"annotation", "returns", "type_comment", "type_params", "ctx"})
_BLOCK_FIELDS = frozenset({"body", "orelse", "finalbody", "handlers", "cases"})


class NotParsable(InvalidRequest):
    """The file is not Python that parses (or cannot be read): there is nothing to fingerprint.

    The message names the file and the line, and is safe to show to the candidate or the interviewer.
    """

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


# ---------------------------------------------------------------------------------------------
# 1. Normalization: a token stream per unit


def _parse(source: str, name: str) -> ast.Module:
    try:
        return ast.parse(source, filename=name)
    except SyntaxError as exc:
        where = f"line {exc.lineno}: " if exc.lineno else ""
        raise NotParsable(f"{name}: {where}{exc.msg}; similarity needs a Python file that parses",
                          exc.lineno) from None
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes; absurdly deep nesting
        raise NotParsable(f"{name}: not parsable as Python ({type(exc).__name__}: {str(exc)[:100]})") from None


def _import_aliases(tree: ast.Module) -> dict[str, str]:
    """The module-level names that stand for a module or a library object, with their full path."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.asname:
                    aliases[a.asname] = a.name
                else:
                    top = a.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom):
            dots = "." * node.level
            for a in node.names:
                if a.name != "*":
                    path = f"{node.module}.{a.name}" if node.module else a.name
                    aliases[a.asname or a.name] = dots + path
    return aliases


def _bound_names(nodes: Iterable[ast.AST]) -> set[str]:
    """Every name bound anywhere in these trees: parameters, stores, definitions, handlers, imports."""
    names: set[str] = set()
    for top in nodes:
        for node in ast.walk(top):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
                names.add(node.id)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.ExceptHandler) and node.name:
                names.add(node.name)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.split(".")[0])
            elif isinstance(node, ast.MatchAs | ast.MatchStar) and node.name:
                names.add(node.name)
            elif isinstance(node, ast.MatchMapping) and node.rest:
                names.add(node.rest)
    return names


def _module_definitions(tree: ast.Module) -> set[str]:
    """Names the candidate defines at module level (functions, classes, globals), imports excepted."""
    names: set[str] = set()
    for stmt in tree.body:
        if isinstance(stmt, ast.Import | ast.ImportFrom):
            continue
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(stmt.name)
        else:
            names |= _bound_names([stmt])
    return names


def _is_noise(stmt: ast.stmt) -> bool:
    """Statements with no effect on the program: docstrings, bare constants and names, `pass`,
    imports, `assert` of a constant, a loop that never runs."""
    if isinstance(stmt, ast.Pass | ast.Import | ast.ImportFrom):
        return True
    if isinstance(stmt, ast.AnnAssign) and stmt.value is None:
        return True  # `x: int` declares a type, nothing else
    if isinstance(stmt, ast.Assert) and isinstance(stmt.test, ast.Constant) and stmt.test.value:
        return True
    if isinstance(stmt, ast.While) and isinstance(stmt.test, ast.Constant) and not stmt.test.value:
        return not stmt.orelse
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant | ast.Name)


def _dead_store(stmt: ast.stmt, read: set[str]) -> bool:
    """An assignment to names the unit never reads: dead code, whatever its value computes."""
    if isinstance(stmt, ast.Assign):
        targets: list[ast.expr] = list(stmt.targets)
    elif isinstance(stmt, ast.AugAssign | ast.AnnAssign):
        targets = [stmt.target]
    else:
        return False
    return all(isinstance(t, ast.Name) and t.id not in read for t in targets)


def _live(body: Iterable[ast.stmt], read: set[str] | None) -> Iterator[ast.stmt]:
    """The statements that matter: noise and dead stores dropped, `if` on a constant replaced by the
    branch it takes (`if False:` is the classic hiding place of inserted code)."""
    for stmt in body:
        if _is_noise(stmt) or (read is not None and _dead_store(stmt, read)):
            continue
        if isinstance(stmt, ast.If) and isinstance(stmt.test, ast.Constant):
            yield from _live(stmt.body if stmt.test.value else stmt.orelse, read)
            continue
        yield stmt


@dataclass
class _Emitter:
    aliases: Mapping[str, str]
    module_defs: set[str]
    local: set[str] = field(default_factory=set)
    self_name: str | None = None
    # The names a function unit reads (None at module level, where any function may read a global).
    read: set[str] | None = None
    out: list[str] = field(default_factory=list)

    def name(self, ident: str) -> str:
        if ident in self.local:
            return "$v"
        if ident in self.module_defs:
            return "$g"
        if ident in self.aliases:
            return "=" + self.aliases[ident]
        return "=" + ident  # a builtin, or a global the file never defines

    def own_callee(self, func: ast.expr) -> bool:
        """A call to the candidate's own function or method, whose keyword names are theirs too."""
        if isinstance(func, ast.Name):
            return func.id in self.module_defs or func.id in self.local
        return (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                and func.value.id == self.self_name)

    def stmts(self, body: Iterable[ast.stmt]) -> None:
        self.out.append("{")
        for stmt in _live(body, self.read):
            self.visit(stmt)
        self.out.append("}")

    def visit(self, node: ast.AST) -> None:
        out = self.out
        if isinstance(node, ast.Name):
            out.append("Name" + self.name(node.id))
            return
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or v is None or v is Ellipsis:
                out.append(f"Const:{v!r}")
            elif isinstance(v, int | float | complex):
                out.append("Const:num")
            else:
                out.append(f"Const:{type(v).__name__}")
            return
        if isinstance(node, ast.Attribute):
            own = isinstance(node.value, ast.Name) and node.value.id == self.self_name
            out.append("Attr$attr" if own else "Attr." + node.attr)
            self.visit(node.value)
            return
        if isinstance(node, ast.AnnAssign):  # `x: T = v` is `x = v`
            out.append("Assign")
            self.visit(node.target)
            if node.value is not None:
                self.visit(node.value)
            return
        if isinstance(node, ast.Call):
            out.append("Call")
            self.visit(node.func)
            for a in node.args:
                self.visit(a)
            own = self.own_callee(node.func)
            for kw in node.keywords:
                out.append("kw**" if kw.arg is None else ("kw$" if own else "kw:" + kw.arg))
                self.visit(kw.value)
            return
        if isinstance(node, ast.arg):
            out.append("arg")
            return
        if isinstance(node, ast.keyword):  # class keywords (`metaclass=`)
            out.append("kw:" + str(node.arg))
            self.visit(node.value)
            return
        if isinstance(node, ast.alias):
            return
        token = type(node).__name__
        op = getattr(node, "op", None)
        if isinstance(node, ast.Compare):
            token += ":" + ",".join(type(o).__name__ for o in node.ops)
        elif op is not None:
            token += ":" + type(op).__name__
        out.append(token)
        for fname, value in ast.iter_fields(node):
            if fname in _DROPPED_FIELDS or fname in ("op", "ops", "name", "id", "arg", "attr", "level", "module",
                                                     "is_async", "kind", "conversion"):
                continue
            if fname in _BLOCK_FIELDS and isinstance(value, list):
                if value:
                    self.stmts(value)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, ast.AST):
                        self.visit(item)
            elif isinstance(value, ast.AST):
                self.visit(value)


def _units(tree: ast.Module) -> Iterator[tuple[str, ast.AST | list[ast.stmt], str | None]]:
    """(name, tree, the name of `self` or None) for each unit of the module, in file order."""
    loose: list[ast.stmt] = []
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
            yield stmt.name, stmt, None
        elif isinstance(stmt, ast.ClassDef):
            rest: list[ast.stmt] = []
            for item in stmt.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    is_static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in item.decorator_list)
                    params = item.args.posonlyargs + item.args.args
                    yield f"{stmt.name}.{item.name}", item, (params[0].arg if params and not is_static else None)
                elif not _is_noise(item):
                    rest.append(item)
            if rest:
                yield stmt.name, rest, None
        elif not _is_noise(stmt):
            loose.append(stmt)
    if loose:
        yield _MODULE_UNIT, loose, None


def tokens(source: str, name: str = "<file>") -> dict[str, list[str]]:
    """The normalized token stream of each unit of a Python file (see the module's docstring).

    Raises `NotParsable` when the source is not Python that parses.
    """
    tree = _parse(source, name)
    try:
        return _tokens(tree)
    except RecursionError:  # parsed, but deeper than the normalizer's recursion (`x+x+...` a thousand times)
        raise NotParsable(f"{name}: an expression nests too deeply to compare") from None


def _tokens(tree: ast.Module) -> dict[str, list[str]]:
    aliases = _import_aliases(tree)
    module_defs = _module_definitions(tree)
    result: dict[str, list[str]] = {}
    for unit, node, self_name in _units(tree):
        body = node if isinstance(node, list) else [node]
        # Inside a function, every name it binds is the candidate's; at module level, the
        # module's definitions already are (`$g`).
        local = _bound_names(body) - module_defs if not isinstance(node, list) else set()
        read = None
        if not isinstance(node, list):
            read = {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Store)}
            read |= {n for g in ast.walk(node) if isinstance(g, ast.Global | ast.Nonlocal) for n in g.names}
        emitter = _Emitter(aliases, module_defs, local, self_name, read)
        if isinstance(node, list):
            # Statements outside functions (constants, a class's attributes, a main block) in a
            # canonical order, so that moving them around changes nothing either.
            parts = []
            for stmt in _live(node, None):
                one = _Emitter(aliases, module_defs, local, self_name, read)
                one.visit(stmt)
                parts.append(one.out)
            emitter.out = ["{", *(t for part in sorted(parts) for t in part), "}"]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            # The unit is the function's parameters and body: its own name is not part of it.
            for deco in node.decorator_list:
                emitter.visit(deco)
            emitter.visit(node.args)
            emitter.stmts(node.body)
        key, n = unit, 2
        while key in result:  # a name defined twice: both definitions are in the file
            key, n = f"{unit}#{n}", n + 1
        result[key] = emitter.out
    return result


# ---------------------------------------------------------------------------------------------
# 2. Fingerprints: hashed k-grams, winnowed


def _hash(gram: list[str]) -> int:
    digest = hashlib.blake2b("\x1f".join(gram).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - _HASH_BITS)


def winnow(stream: list[str], k: int = K_TOKENS, w: int = WINDOW) -> list[int]:
    """The hashes winnowing selects from a token stream: the rightmost minimum of every window of
    `w` consecutive k-gram hashes, each position once. A stream shorter than `k` selects nothing; one
    with fewer than `w` k-grams selects its minimum."""
    hashes = [_hash(stream[i:i + k]) for i in range(len(stream) - k + 1)]
    if not hashes:
        return []
    picked: list[int] = []
    last = -1
    for start in range(max(1, len(hashes) - w + 1)):
        window = hashes[start:start + w]
        low = min(window)
        pos = start + max(i for i, h in enumerate(window) if h == low)
        if pos != last:
            picked.append(hashes[pos])
            last = pos
    return picked


@dataclass(frozen=True)
class Fingerprint:
    """A file's winnowed fingerprints by unit; `hashes` is their multiset as a sorted list.

    Only fingerprints of the same `version`, `k` and `w` can be compared. `to_json` and
    `from_json` are the stored form.
    """

    units: Mapping[str, tuple[int, ...]]
    k: int = K_TOKENS
    w: int = WINDOW
    version: int = VERSION

    @property
    def hashes(self) -> list[int]:
        return sorted(h for hs in self.units.values() for h in hs)

    def __len__(self) -> int:
        return sum(len(hs) for hs in self.units.values())

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "k": self.k, "w": self.w, "hashes": self.hashes,
                           "units": {u: list(hs) for u, hs in self.units.items()}}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Fingerprint:
        data = json.loads(text)
        if not isinstance(data, dict) or not {"version", "k", "w", "units"} <= data.keys():
            raise ValueError("a fingerprint is a JSON object with version, k, w and units")
        units = {str(u): tuple(sorted(int(h) for h in hs)) for u, hs in data["units"].items()}
        fp = cls(units, k=int(data["k"]), w=int(data["w"]), version=int(data["version"]))
        if "hashes" in data and sorted(int(h) for h in data["hashes"]) != fp.hashes:
            raise ValueError("the fingerprint's hashes are not the union of its units': the record is corrupt")
        return fp


def fingerprint(source: str, name: str = "<file>", k: int = K_TOKENS, w: int = WINDOW) -> Fingerprint:
    """The fingerprint of a Python file; raises `NotParsable` when it does not parse."""
    if k < 1 or w < 1:
        raise ValueError(f"k and w are at least 1 (got k={k}, w={w})")
    return Fingerprint({u: tuple(sorted(winnow(s, k, w))) for u, s in tokens(source, name).items()}, k=k, w=w)


# ---------------------------------------------------------------------------------------------
# 3. Scores


def _check_comparable(*fps: Fingerprint) -> None:
    first = fps[0]
    for fp in fps[1:]:
        if (fp.version, fp.k, fp.w) != (first.version, first.k, first.w):
            raise ValueError(f"fingerprints of version {first.version} (k={first.k}, w={first.w}) and version "
                             f"{fp.version} (k={fp.k}, w={fp.w}) cannot be compared: fingerprint both files again")


def _multiset(hashes: Iterable[int], ignore: Iterable[int] = ()) -> Counter[int]:
    counts = Counter(hashes)
    for h in set(ignore):
        counts.pop(h, None)
    return counts


def _jaccard(a: Counter[int], b: Counter[int]) -> float:
    union = sum((a | b).values())
    return sum((a & b).values()) / union if union else 0.0


def similarity(a: Fingerprint, b: Fingerprint, template: Fingerprint | None = None) -> float:
    """The Jaccard index of the two fingerprint multisets, in [0, 1] and symmetric.

    With `template`, every fingerprint found in the template is ignored on both sides (as MOSS's
    base file): code handed to every candidate is not evidence of copying. Two files with no
    fingerprint left (empty, trivial, or nothing beyond the template) score 0: there is no evidence.
    """
    _check_comparable(a, b, *([template] if template is not None else []))
    ignore = template.hashes if template is not None else []
    return _jaccard(_multiset(a.hashes, ignore), _multiset(b.hashes, ignore))


def distance_from_template(a: Fingerprint, template: Fingerprint) -> float:
    """The share of the submission's fingerprints absent from the template, in [0, 1].

    0 for the template handed back unchanged (or an empty file: nothing was written), near 1 for a
    solution written from scratch, whatever the template's size.
    """
    _check_comparable(a, template)
    total = len(a)
    if not total:
        return 0.0
    return sum(_multiset(a.hashes, template.hashes).values()) / total


@dataclass(frozen=True)
class UnitMatch:
    """The unit of the other file that shares the most fingerprints with one unit of the first."""

    unit: str
    other: str | None
    score: float
    shared: int
    size: int


def unit_matches(a: Fingerprint, b: Fingerprint, template: Fingerprint | None = None) -> list[UnitMatch]:
    """For each unit of `a` (in its order), the unit of `b` it resembles most, by Jaccard index."""
    _check_comparable(a, b, *([template] if template is not None else []))
    ignore = set(template.hashes) if template is not None else set()
    b_units = {u: _multiset(hs, ignore) for u, hs in b.units.items()}
    matches = []
    for unit, hs in a.units.items():
        mine = _multiset(hs, ignore)
        best: tuple[float, int, str | None] = (0.0, 0, None)
        for other, theirs in b_units.items():
            shared = sum((mine & theirs).values())
            score = _jaccard(mine, theirs)
            if shared and (score, shared) > best[:2]:
                best = (score, shared, other)
        matches.append(UnitMatch(unit, best[2], best[0], best[1], sum(mine.values())))
    return matches


# ---------------------------------------------------------------------------------------------
# The command: `grader similarity A B [--problem ID]`


def read_source(path: Path) -> str:
    """A submission's Python source: a .py file, or a notebook's code cells; `NotParsable` otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NotParsable(f"{path}: cannot be read ({exc.strerror or exc})"
                          if isinstance(exc, OSError) else f"{path}: not UTF-8 text") from None
    from grader.engine.notebook import convert, is_notebook_name

    if is_notebook_name(path.name):
        try:
            return convert(text, path.name)
        except InvalidRequest as exc:
            raise NotParsable(f"{path}: {exc.message}") from None
    return text


def _count(n: int) -> str:
    return f"{n} fingerprint" + ("" if n == 1 else "s")


def similarity_main(path_a: str | Path, path_b: str | Path, template: str | Path | None = None) -> tuple[float, str]:
    """The score of two files and the text the command prints: one line per unit of A with the unit
    of B it resembles most, then the score alone on the last line (e.g. `0.873`), for scripts.

    `template`, the starter template, is ignored on both sides when given: its source as a `str`
    (`Problem.template`), or its file as a `Path`. Raises `NotParsable` for a file that cannot be
    read or parsed.
    """
    a_path, b_path = Path(path_a), Path(path_b)
    fa = fingerprint(read_source(a_path), str(a_path))
    fb = fingerprint(read_source(b_path), str(b_path))
    if isinstance(template, Path):
        ft: Fingerprint | None = fingerprint(read_source(template), str(template))
    else:
        ft = fingerprint(template, "template.py") if template is not None else None
    score = similarity(fa, fb, ft)
    lines = [f"A: {a_path}", f"B: {b_path}"]
    if ft is not None:
        lines.append(f"template ignored: distance from it A {distance_from_template(fa, ft):.3f}, "
                     f"B {distance_from_template(fb, ft):.3f}")
    matches = unit_matches(fa, fb, ft)
    width = max((len(m.unit) for m in matches), default=0)
    for m in matches:
        if m.other is None:
            lines.append(f"  {m.unit:<{width}}  ~ nothing in B ({_count(m.size)})")
        else:
            lines.append(f"  {m.unit:<{width}}  ~ {m.other}  {m.score:.3f} ({m.shared} of {_count(m.size)})")
    if not len(fa) or not len(fb):
        lines.append("a file has no code long enough to compare (under "
                     f"{fa.k} tokens in every function): the score is 0")
    lines.append(f"{score:.3f}")
    return score, "\n".join(lines)


def cmd_similarity(args: argparse.Namespace) -> int:
    """`grader similarity A B [--problem ID]`: 0 when compared, 2 when a file cannot be read or parsed."""
    template = None
    try:
        if args.problem is not None:
            from grader.engine.catalog import get_problem

            template = get_problem(args.problem).template
        _, text = similarity_main(args.a, args.b, template)
    except InvalidRequest as exc:  # NotParsable, UnknownProblem
        print(f"grader: {exc.message}", file=sys.stderr)
        return 2
    print(text)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `similarity` to the CLI's subcommands: `grader similarity A B [--problem ID]`."""
    p = sub.add_parser(
        "similarity", help="how alike two solutions are, from 0 to 1 (the score is the last line)",
        description="Compare two solution files by normalized-AST fingerprints (names, literals, comments and "
                    f"formatting ignored, functions in any order). Scores at or above {FLAG_THRESHOLD} suggest a "
                    "copy. Exit status: 0 compared, 2 a file cannot be read or parsed.")
    p.add_argument("a", metavar="A", help="a solution .py file (or a notebook)")
    p.add_argument("b", metavar="B", help="the other solution")
    p.add_argument("--problem", default=None, metavar="ID",
                   help="ignore the code of this problem's starter template (see `grader problems`)")
    p.set_defaults(func=cmd_similarity)
