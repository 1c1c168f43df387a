"""Mutants of a reference: one small edit each, drawn from the mistakes candidates really make.

Every operator proposes "replace this node by that one" on the reference's AST.
The edit is spliced into the original text (so the diff is one or two lines,
comments and layout kept) and the result is parsed again and checked to be
exactly the intended tree, with parentheses added where precedence needs them;
an edit that cannot be written faithfully is dropped, never approximated.

Only the functions a submission must define (the names of the problem's
template) and the module-level functions and classes they reach are mutated:
the reference's grader helpers (data sets, the grader's own forward pass) are
never called on a submission, so their mutants would all be equivalent.
"""

from __future__ import annotations

import ast
import copy
import difflib
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

OPERATORS = (
    "sign",            # unary minus removed or added, + <-> -
    "dropped-term",    # a + b -> a (or b), a - b -> a
    "sum-mean",        # .sum / np.sum <-> .mean / np.mean
    "axis",            # axis=k changed or dropped
    "transpose",       # .T removed, or added to an operand of @
    "off-by-one",      # a slice bound or a range() bound +/- 1
    "constant",        # a numeric constant changed
    "stride-pad",      # stride read as 1, pad/padding read as 0
    "inplace-copy",    # x += y <-> x = x + y, .copy() dropped
    "comparison",      # < <-> <=, > <-> >=
    "dropped-call",    # a call statement left out (zero_grad, step, backward), .detach() dropped
    "labels",          # ones_like <-> zeros_like (real and fake labels swapped)
)

STRIDE_NAMES = {"stride": 1, "pad": 0, "padding": 0}
LABELS = {"ones_like": "zeros_like", "zeros_like": "ones_like", "ones": "zeros", "zeros": "ones"}


@dataclass(frozen=True)
class Mutant:
    """One edit of the reference: what it models, where, the diff and the mutated source."""

    id: str          # stable across unrelated edits of the reference: operator, function, hash of the edit
    operator: str
    function: str    # qualified name, e.g. TwoLayerNet.loss
    line: int
    description: str
    diff: str
    source: str


@dataclass(frozen=True)
class _Edit:
    operator: str
    node: ast.AST
    replacement: ast.AST
    description: str


def _const(value: int | float) -> ast.Constant:
    return ast.Constant(value=value)


def _is_number(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


def changed_constant(value: int | float) -> int | float:
    """The usual slip for each constant: 0.5 <-> 1.0, 2 -> 1, an epsilon -> 0, otherwise doubled or +1."""
    if isinstance(value, int):
        return {0: 1, 1: 2, 2: 1}.get(value, value + 1)
    if value == 0.0:
        return 1.0
    if value == 1.0:
        return 0.5
    if value == 0.5:
        return 1.0
    if value == 2.0:
        return 1.0
    if 0 < abs(value) < 1e-3:
        return 0.0
    return value * 2


def _plus(node: ast.expr, k: int) -> ast.expr:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return _const(node.value + k)
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant)
            and type(node.operand.value) is int):
        return _const(-node.operand.value + k)
    op: ast.operator = ast.Add() if k > 0 else ast.Sub()
    return ast.BinOp(left=copy.deepcopy(node), op=op, right=_const(abs(k)))


def _edits(fn: ast.AST) -> Iterator[_Edit]:
    """Every edit of one function body, in source order (ast.walk is breadth-first: sorted later)."""
    for node in ast.walk(fn):
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            yield _Edit("sign", node, copy.deepcopy(node.operand), "unary minus removed")
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
            flipped: ast.operator = ast.Sub() if isinstance(node.op, ast.Add) else ast.Add()
            yield _Edit("sign", node, ast.BinOp(copy.deepcopy(node.left), flipped, copy.deepcopy(node.right)),
                        f"{'+ -> -' if isinstance(node.op, ast.Add) else '- -> +'}")
            yield _Edit("dropped-term", node, copy.deepcopy(node.left), "right term dropped")
            if isinstance(node.op, ast.Add):
                yield _Edit("dropped-term", node, copy.deepcopy(node.right), "left term dropped")
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.Return)) and isinstance(node.value, ast.BinOp):
            yield _Edit("sign", node.value, ast.UnaryOp(ast.USub(), copy.deepcopy(node.value)),
                        "result negated")
        if isinstance(node, ast.Attribute) and node.attr in ("sum", "mean") and isinstance(node.ctx, ast.Load):
            other = "mean" if node.attr == "sum" else "sum"
            yield _Edit("sum-mean", node, ast.Attribute(copy.deepcopy(node.value), other, ast.Load()),
                        f"{node.attr} -> {other}")
        if isinstance(node, ast.Call):
            yield from _call_edits(node)
        if isinstance(node, ast.Attribute) and node.attr == "T" and isinstance(node.ctx, ast.Load):
            yield _Edit("transpose", node, copy.deepcopy(node.value), ".T dropped")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
            for side in ("left", "right"):
                operand = getattr(node, side)
                if isinstance(operand, ast.Attribute) and operand.attr == "T":
                    continue
                mutated = copy.deepcopy(node)
                setattr(mutated, side, ast.Attribute(copy.deepcopy(operand), "T", ast.Load()))
                yield _Edit("transpose", node, mutated, f".T added to the {side} operand of @")
        if isinstance(node, ast.Slice):
            for bound in ("lower", "upper"):
                value = getattr(node, bound)
                if value is None:
                    continue
                for k in (1, -1):
                    mutated_slice = copy.deepcopy(node)
                    setattr(mutated_slice, bound, _plus(value, k))
                    yield _Edit("off-by-one", node, mutated_slice, f"slice {bound} bound {k:+d}")
        if _is_number(node):
            assert isinstance(node, ast.Constant) and isinstance(node.value, (int, float))
            new = changed_constant(node.value)
            yield _Edit("constant", node, _const(new), f"{node.value!r} -> {new!r}")
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in STRIDE_NAMES:
            value = STRIDE_NAMES[node.id]
            yield _Edit("stride-pad", node, _const(value), f"{node.id} ignored (read as {value})")
        if isinstance(node, ast.AugAssign) and isinstance(node.target, (ast.Name, ast.Subscript, ast.Attribute)):
            load = copy.deepcopy(node.target)
            _set_load(load)
            yield _Edit("inplace-copy", node, ast.Assign(targets=[copy.deepcopy(node.target)],
                                                         value=ast.BinOp(load, copy.deepcopy(node.op),
                                                                         copy.deepcopy(node.value)), lineno=0),
                        "in-place update turned into a new array")
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.value, ast.BinOp)
                and isinstance(node.targets[0], (ast.Name, ast.Subscript, ast.Attribute))
                and _same(node.targets[0], node.value.left)):
            yield _Edit("inplace-copy", node, ast.AugAssign(target=copy.deepcopy(node.targets[0]),
                                                            op=copy.deepcopy(node.value.op),
                                                            value=copy.deepcopy(node.value.right)),
                        "new array turned into an in-place update")
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            yield _Edit("dropped-call", node, ast.Pass(), f"call left out: {ast.unparse(node.value.func)}()")
        if isinstance(node, ast.Attribute) and node.attr in LABELS and isinstance(node.ctx, ast.Load):
            yield _Edit("labels", node, ast.Attribute(copy.deepcopy(node.value), LABELS[node.attr], ast.Load()),
                        f"{node.attr} -> {LABELS[node.attr]}")
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            swap: dict[type[ast.cmpop], Callable[[], ast.cmpop]] = {
                ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}
            make = swap.get(type(node.ops[0]))
            if make is not None:
                flipped_cmp = ast.Compare(copy.deepcopy(node.left), [make()], copy.deepcopy(node.comparators))
                yield _Edit("comparison", node, flipped_cmp, f"{_op_text(node.ops[0])} -> {_op_text(make())}")


def _op_text(op: ast.cmpop) -> str:
    return {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}[type(op)]


def _call_edits(node: ast.Call) -> Iterator[_Edit]:
    for i, kw in enumerate(node.keywords):
        if kw.arg != "axis":
            continue
        value = kw.value
        options: list[tuple[ast.expr | None, str]] = [(None, "axis dropped (reduces over everything)")]
        if isinstance(value, ast.Constant) and type(value.value) is int:
            k = value.value
            new = 1 if k == 0 else 0
            options.append((_const(new), f"axis={k} -> axis={new}"))
        elif isinstance(value, ast.Tuple) and len(value.elts) > 1:
            options.append((ast.Tuple(copy.deepcopy(value.elts[:-1]), ast.Load()), "last axis left out"))
        for new_value, text in options:
            mutated = copy.deepcopy(node)
            if new_value is None:
                del mutated.keywords[i]
            else:
                mutated.keywords[i].value = new_value
            yield _Edit("axis", node, mutated, text)
    func = node.func
    if isinstance(func, ast.Attribute) and func.attr == "copy" and not node.args and not node.keywords:
        yield _Edit("inplace-copy", node, copy.deepcopy(func.value), ".copy() dropped")
    if isinstance(func, ast.Attribute) and func.attr == "detach" and not node.args and not node.keywords:
        yield _Edit("dropped-call", node, copy.deepcopy(func.value), ".detach() dropped")
    if isinstance(func, ast.Name) and func.id == "range" and 1 <= len(node.args) <= 3:
        positions = [0] if len(node.args) == 1 else [0, 1]
        for pos in positions:
            for k in (1, -1):
                mutated = copy.deepcopy(node)
                mutated.args[pos] = _plus(node.args[pos], k)
                what = "stop" if len(node.args) == 1 or pos == 1 else "start"
                yield _Edit("off-by-one", node, mutated, f"range {what} {k:+d}")


def _set_load(node: ast.AST) -> None:
    for sub in ast.walk(node):
        if hasattr(sub, "ctx"):
            sub.ctx = ast.Load()


def _same(a: ast.AST, b: ast.AST) -> bool:
    a2, b2 = copy.deepcopy(a), copy.deepcopy(b)
    _set_load(a2)
    _set_load(b2)
    return ast.dump(a2) == ast.dump(b2)


def mutable_functions(tree: ast.Module, contract_names: set[str]) -> list[tuple[str, ast.AST]]:
    """(qualified name, node) of every function to mutate: the contract's, and module-level ones they reach."""
    defs: dict[str, ast.FunctionDef | ast.ClassDef] = {
        n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    reached: set[str] = set()
    todo = [n for n in contract_names if n in defs]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        for sub in ast.walk(defs[name]):
            if isinstance(sub, ast.Name) and sub.id in defs and sub.id not in reached:
                todo.append(sub.id)
    out: list[tuple[str, ast.AST]] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name in reached:
            out.append((node.name, node))
        elif isinstance(node, ast.ClassDef) and node.name in reached:
            out.extend((f"{node.name}.{m.name}", m) for m in node.body if isinstance(m, ast.FunctionDef))
    return out


def _body_nodes(fn: ast.AST) -> list[ast.AST]:
    """The statements of a function, without its docstring, decorators, defaults or annotations."""
    assert isinstance(fn, ast.FunctionDef)
    body: list[ast.AST] = list(fn.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return body


def _offsets(source: str) -> list[int]:
    starts, pos = [0], 0
    for line in source.splitlines(keepends=True):
        pos += len(line.encode("utf-8"))
        starts.append(pos)
    return starts


def _replace(tree: ast.Module, target: ast.AST, replacement: ast.AST) -> ast.Module:
    """A copy of `tree` with the node at target's exact position replaced (the expected mutated tree)."""
    key = (type(target), target.lineno, target.col_offset,  # type: ignore[attr-defined]
           target.end_lineno, target.end_col_offset)  # type: ignore[attr-defined]

    class Swap(ast.NodeTransformer):
        done = False

        def visit(self, node: ast.AST) -> ast.AST:
            if not self.done and (type(node), getattr(node, "lineno", None), getattr(node, "col_offset", None),
                                  getattr(node, "end_lineno", None), getattr(node, "end_col_offset", None)) == key:
                self.done = True
                return copy.deepcopy(replacement)
            return self.generic_visit(node)

    swapped = Swap().visit(copy.deepcopy(tree))
    assert isinstance(swapped, ast.Module)
    return swapped


def _splice(source: str, tree: ast.Module, top: int, edit: _Edit) -> str | None:
    """The source with the edit written in, or None when no writing parses back to exactly the intended tree.

    Only top-level statement `top` can change (the edit is inside it), so only it is compared.
    """
    node = edit.node
    lines = _offsets(source)
    raw = source.encode("utf-8")
    start = lines[node.lineno - 1] + node.col_offset  # type: ignore[attr-defined]
    end = lines[node.end_lineno - 1] + node.end_col_offset  # type: ignore[attr-defined]
    one = ast.Module(body=[tree.body[top]], type_ignores=[])
    # Round-tripped through unparse: the same canonical form as a parse of the spliced text.
    expected = ast.dump(ast.parse(ast.unparse(_replace(one, node, edit.replacement))).body[0])
    text = ast.unparse(edit.replacement)
    candidates = [text] if isinstance(edit.replacement, ast.stmt) else [text, f"({text})"]
    for candidate in candidates:
        mutated = (raw[:start] + candidate.encode("utf-8") + raw[end:]).decode("utf-8")
        try:
            body = ast.parse(mutated).body
        except SyntaxError:
            continue
        if len(body) == len(tree.body) and ast.dump(body[top]) == expected:
            return mutated
    return None


def unified_diff(reference: str, mutated: str, name: str) -> str:
    return "".join(difflib.unified_diff(reference.splitlines(keepends=True), mutated.splitlines(keepends=True),
                                        fromfile=f"reference/{name}", tofile=f"mutant/{name}", n=1))


def _stable_id(operator: str, function: str, diff: str) -> str:
    changed = "".join(line.strip() for line in diff.splitlines()
                      if line[:1] in "+-" and not line.startswith(("+++", "---")))
    digest = hashlib.sha1(f"{operator}|{function}|{changed}".encode()).hexdigest()[:8]
    return f"{operator}:{function}:{digest}"


def generate(source: str, contract_names: set[str], name: str = "reference.py") -> list[Mutant]:
    """Every mutant of `source`, in source order (line, column, operator), each one parsing and distinct."""
    tree = ast.parse(source)
    found: list[tuple[tuple[int, int, int, str], Mutant]] = []
    seen_sources: set[str] = {source}
    tops = {id(sub): i for i, top in enumerate(tree.body) for sub in ast.walk(top)}
    for qualname, fn in mutable_functions(tree, contract_names):
        for stmt in _body_nodes(fn):
            for edit in _edits(stmt):
                mutated = _splice(source, tree, tops[id(fn)], edit)
                if mutated is None or mutated in seen_sources:
                    continue
                seen_sources.add(mutated)
                diff = unified_diff(source, mutated, name)
                line = edit.node.lineno  # type: ignore[attr-defined]
                mutant = Mutant(id=_stable_id(edit.operator, qualname, diff), operator=edit.operator,
                                function=qualname, line=line, description=edit.description, diff=diff,
                                source=mutated)
                order = (line, edit.node.col_offset, OPERATORS.index(edit.operator),  # type: ignore[attr-defined]
                         edit.description)
                found.append((order, mutant))
    found.sort(key=lambda pair: pair[0])
    mutants: list[Mutant] = []
    ids: dict[str, int] = {}
    for _, mutant in found:
        n = ids.get(mutant.id, 0)
        ids[mutant.id] = n + 1
        if n:  # the same edit text twice in one function (two identical lines): number the later ones
            mutant = Mutant(**{**mutant.__dict__, "id": f"{mutant.id}.{n}"})
        mutants.append(mutant)
    return mutants


def contract_names(template_source: str) -> set[str]:
    """The names a submission must define: every top-level function and class of the starter template."""
    return {n.name for n in ast.parse(template_source).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
