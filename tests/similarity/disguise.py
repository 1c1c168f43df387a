"""Disguised copies of a solution, made the way a candidate would hide a copy.

Each function takes Python source and returns Python source; `disguise_all` applies every one.
The renamer renames every name the file binds (functions, classes, parameters, locals, attributes
of `self`), so the copy is no longer a valid solution of the problem, which a copier would not
do: it is the hardest case for the fingerprints, not a realistic one.
"""

from __future__ import annotations

import ast
import builtins
import random

_KEEP = frozenset(dir(builtins)) | {"self", "cls"}


def _bound(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("__"):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            imported.add(node.asname or node.name.split(".")[0])
    return names - imported - _KEEP


class _Renamer(ast.NodeTransformer):
    def __init__(self, names: set[str], functions: set[str], seed: int) -> None:
        self.functions = functions
        rng = random.Random(seed)
        words = ["alpha", "beta", "gamma", "delta", "tmp", "val", "arr", "mat", "res", "acc", "q", "z"]
        self.map = {n: f"{rng.choice(words)}_{i}" for i, n in enumerate(sorted(names))}

    def visit_Name(self, node: ast.Name) -> ast.Name:
        node.id = self.map.get(node.id, node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.arg:
        node.arg = self.map.get(node.arg, node.arg)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        node.name = self.map.get(node.name, node.name)
        self.generic_visit(node)
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.ClassDef:
        node.name = self.map.get(node.name, node.name)
        self.generic_visit(node)
        return node

    def visit_Call(self, node: ast.Call) -> ast.Call:
        # Keyword arguments are renamed in calls to the file's own functions only: `dtype=` in a
        # call to numpy stays, even where the file also has a variable named dtype.
        own = isinstance(node.func, ast.Name) and node.func.id in self.functions
        own |= isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name) and (
            node.func.value.id == "self")
        if own:
            for kw in node.keywords:
                if kw.arg in self.map:
                    kw.arg = self.map[kw.arg]
        self.generic_visit(node)
        return node

    def visit_Attribute(self, node: ast.Attribute) -> ast.Attribute:
        if isinstance(node.value, ast.Name) and node.value.id == "self":
            node.attr = "my_" + node.attr
        self.generic_visit(node)
        return node


def rename(source: str, seed: int = 0) -> str:
    """Every name the file binds renamed (keyword arguments included wherever they match one)."""
    tree = ast.parse(source)
    functions = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    return ast.unparse(_Renamer(_bound(tree), functions, seed).visit(tree))


def reorder(source: str, seed: int = 0) -> str:
    """Top-level definitions (and methods) shuffled; imports stay first."""
    tree = ast.parse(source)
    rng = random.Random(seed)
    head = [s for s in tree.body if isinstance(s, ast.Import | ast.ImportFrom | ast.Expr)]
    rest = [s for s in tree.body if s not in head]
    rng.shuffle(rest)
    rest.reverse()  # never the identity, even when the shuffle is
    for node in rest:
        if isinstance(node, ast.ClassDef):
            node.body.reverse()
    tree.body = head + rest
    return ast.unparse(tree)


class _DocSwap(ast.NodeTransformer):
    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.FunctionDef:
        self.generic_visit(node)
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            if len(body) > 1:
                node.body = body[1:]
        else:
            node.body = [ast.Expr(ast.Constant(f"Compute {node.name} (my own implementation).")), *body]
        return node


def reformat(source: str, seed: int = 0) -> str:
    """Docstrings removed where present and added where not, other spacing, comments everywhere."""
    tree = _DocSwap().visit(ast.parse(source))
    lines = []
    for i, line in enumerate(ast.unparse(tree).splitlines(), start=seed):
        indent = line[: len(line) - len(line.lstrip())]
        stripped = line.strip().replace(", ", ",").replace(" = ", "=", 1)
        if i % 3 == 0 and stripped and not stripped.startswith(("@", "else", "elif", "except", "finally")):
            lines.append(f"{indent}# step {i}: this is where the work happens")
        lines.append(indent + stripped + ("   # checked" if i % 4 == 1 and not stripped.endswith(":") else ""))
        if stripped.startswith(("return", "def ")) and i % 2:
            lines.append("")
    return "\n".join(lines) + "\n"


class _Literals(ast.NodeTransformer):
    def __init__(self, step: int) -> None:
        self.step = step

    def visit_Constant(self, node: ast.Constant) -> ast.Constant:
        v = node.value
        if isinstance(v, bool) or v is None:
            return node
        if isinstance(v, int):
            return ast.Constant(v + self.step)
        if isinstance(v, float):
            return ast.Constant(v * 1.05)
        if isinstance(v, str):
            return ast.Constant(v + "_")
        return node


def literals(source: str, seed: int = 0) -> str:
    """Every number nudged (ints by 1 + seed, floats by 5%), every string changed."""
    return ast.unparse(_Literals(1 + seed).visit(ast.parse(source)))


_DEAD = [
    "_unused_counter = 0",
    "if False:\n    print('debug')",
    "_scratch = [0] * 3",
    "assert True",
]


def dead_code(source: str, seed: int = 0, statements: int = 3) -> str:
    """A few statements that do nothing, inserted at random places of random functions."""
    tree = ast.parse(source)
    rng = random.Random(seed)
    bodies = [n.body for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    if not bodies:
        bodies = [tree.body]
    for i in range(statements):
        body = rng.choice(bodies)
        stmt = ast.parse(_DEAD[i % len(_DEAD)]).body[0]
        body.insert(rng.randrange(len(body) + 1), stmt)
    return ast.unparse(tree)


# Code that changes nothing but that no normalization removes: it reads a live parameter.
_LIVE_NOISE = [
    "print(type({p}))",
    "if {p} is None and {p} is not None:\n    raise RuntimeError('unreachable')",
    "for _ in range(0):\n    print({p})",
]


def live_noise(source: str, seed: int = 0, statements: int = 3) -> str:
    """A few statements that do nothing yet read a parameter, inserted into random functions."""
    tree = ast.parse(source)
    rng = random.Random(seed)
    funcs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.args.args]
    for i in range(statements):
        func = rng.choice(funcs)
        param = func.args.args[-1].arg
        stmt = ast.parse(_LIVE_NOISE[i % len(_LIVE_NOISE)].format(p=param)).body[0]
        func.body.insert(rng.randrange(len(func.body) + 1), stmt)
    return ast.unparse(tree)


def disguise_all(source: str, seed: int = 0) -> str:
    """Every disguise at once: dead code, literals, names, order, then the formatting."""
    return reformat(reorder(rename(literals(dead_code(source, seed), seed), seed), seed), seed)


def all_and_noise(source: str, seed: int = 0) -> str:
    """Every disguise, and code that does nothing but that normalization keeps."""
    return disguise_all(live_noise(source, seed), seed)


DISGUISES = {
    "renamed": rename,
    "reordered": reorder,
    "reformatted": reformat,
    "literals": literals,
    "dead_code": dead_code,
    "live_noise": live_noise,
    "all": disguise_all,
    "all_and_noise": all_and_noise,
}
