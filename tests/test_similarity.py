"""Similarity of submissions (grader/engine/similarity.py): copies are caught, independent work is not.

Copies are made from every correct solution and reference by the disguises of
tests/similarity/disguise.py; independent solutions are the catalog's own correct solutions and
references, written separately, in different styles. The measured scores are printed (-s to see).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grader.engine.similarity import (
    FLAG_THRESHOLD,
    Fingerprint,
    NotParsable,
    distance_from_template,
    fingerprint,
    register,
    similarity,
    similarity_main,
    tokens,
    winnow,
)
from tests.similarity.disguise import DISGUISES

ROOT = Path(__file__).resolve().parents[1]
PROBLEMS = ("attention", "cnn", "gan", "mlp", "optim", "regularization", "rnn")
SEEDS = (0, 1)


def independent_files(problem: str) -> list[Path]:
    """Solutions of one exercise written independently: its correct solutions and its reference."""
    correct = sorted((ROOT / "tests" / "solutions" / problem).glob("correct_*.py"))
    return [*correct, ROOT / "reference" / f"{problem}.py"]


def template(problem: str) -> str:
    return (ROOT / "problems" / problem / "template.py").read_text()


def fp(path: Path) -> Fingerprint:
    return fingerprint(path.read_text(), str(path))


ALL_FILES = [f for p in PROBLEMS for f in independent_files(p)]


def test_every_exercise_has_several_independent_solutions() -> None:
    for problem in PROBLEMS:
        assert len(independent_files(problem)) >= 3, problem


# ---------------------------------------------------------------------------------------------
# The threshold's two sides, measured on the catalog


@pytest.mark.parametrize("problem", PROBLEMS)
def test_independent_correct_solutions_are_not_flagged(problem: str) -> None:
    files = independent_files(problem)
    fps = {f.stem: fp(f) for f in files}
    t = fingerprint(template(problem), "template.py")
    scores = {(a, b): similarity(fa, fb) for (a, fa), (b, fb) in itertools.combinations(fps.items(), 2)}
    with_template = {(a, b): similarity(fa, fb, t) for (a, fa), (b, fb) in itertools.combinations(fps.items(), 2)}
    (pair, top) = max(scores.items(), key=lambda kv: kv[1])
    print(f"\n{problem}: independent max {top:.3f} {pair}, with the template ignored "
          f"{max(with_template.values()):.3f}")
    assert len(scores) >= 3
    assert top < FLAG_THRESHOLD, f"{pair} scores {top:.3f}, flagged as a copy"
    assert max(with_template.values()) < FLAG_THRESHOLD
    # Not merely under the threshold: clearly apart from it.
    assert top < FLAG_THRESHOLD - 0.15


@pytest.mark.parametrize("problem", PROBLEMS)
def test_disguised_copies_are_flagged(problem: str) -> None:
    lowest: dict[str, tuple[float, str]] = {}
    t = fingerprint(template(problem), "template.py")
    for path in independent_files(problem):
        source = path.read_text()
        original = fingerprint(source)
        for name, disguise in DISGUISES.items():
            for seed in SEEDS:
                copy = fingerprint(disguise(source, seed))
                score = similarity(original, copy)
                assert score == similarity(copy, original)
                assert score >= FLAG_THRESHOLD, f"{path.name} {name} (seed {seed}) scores only {score:.3f}"
                assert similarity(original, copy, t) >= FLAG_THRESHOLD
                if score < lowest.get(name, (2.0, ""))[0]:
                    lowest[name] = (score, path.name)
    print(f"\n{problem}: copies min " + ", ".join(f"{n} {s:.3f} ({f})" for n, (s, f) in lowest.items()))
    # The disguises that normalization undoes entirely leave an exact match.
    for name in ("renamed", "reordered", "reformatted", "literals", "dead_code", "all"):
        assert lowest[name][0] == 1.0, (name, lowest[name])


def test_each_disguise_really_changes_the_source() -> None:
    source = (ROOT / "tests" / "solutions" / "mlp" / "correct_loops.py").read_text()
    for name, disguise in DISGUISES.items():
        changed = disguise(source, 0)
        assert changed != source, name
        compile(changed, name, "exec")  # still Python
    renamed = DISGUISES["renamed"](source, 0)
    assert "affine_forward" not in renamed and "dout" not in renamed


# ---------------------------------------------------------------------------------------------
# Fixed points of the score


@pytest.mark.parametrize("path", ALL_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_a_file_is_identical_to_itself(path: Path) -> None:
    assert similarity(fp(path), fp(path)) == 1.0
    assert similarity(fp(path), fingerprint(path.read_text())) == 1.0


@pytest.mark.parametrize("trivial", ["", "\n\n# nothing yet\n", '"""Only a docstring."""\n', "import numpy as np\n",
                                     "def f(x):\n    return x\n", "def f():\n    pass\n"])
def test_an_empty_or_trivial_file_resembles_nothing(trivial: str) -> None:
    empty = fingerprint(trivial)
    for path in ALL_FILES[::3]:
        assert similarity(empty, fp(path)) == 0.0
    assert similarity(empty, empty) == 0.0  # no evidence either way


@pytest.mark.parametrize("problem", PROBLEMS)
def test_the_template_alone_is_far_from_every_solution(problem: str) -> None:
    t = fingerprint(template(problem), "template.py")
    for path in independent_files(problem):
        f = fp(path)
        assert similarity(t, f) < 0.05
        assert distance_from_template(f, t) > 0.95
    assert distance_from_template(t, t) == 0.0
    assert distance_from_template(fingerprint(""), t) == 0.0


def test_the_template_is_ignored_when_given() -> None:
    """Two solutions that share only the code handed out with the exercise are not copies."""
    given_code = (ROOT / "reference" / "cnn.py").read_text()  # a large template: a whole helper module
    a_src = given_code + "\n" + (ROOT / "tests" / "solutions" / "cnn" / "correct_einsum.py").read_text()
    b_src = given_code + "\n" + (ROOT / "tests" / "solutions" / "cnn" / "correct_naive_loops.py").read_text()
    a, b, t = fingerprint(a_src), fingerprint(b_src), fingerprint(given_code)
    ignored = similarity(a, b, template=t)
    alone = similarity(fp(ROOT / "tests/solutions/cnn/correct_einsum.py"),
                       fp(ROOT / "tests/solutions/cnn/correct_naive_loops.py"))
    assert similarity(a, b) > alone + 0.3  # the shared template weighs
    print(f"\nshared template: {similarity(a, b):.3f}, ignored {ignored:.3f}, the solutions alone {alone:.3f}")
    assert ignored < FLAG_THRESHOLD - 0.15
    assert abs(ignored - alone) < 0.1
    assert 0.2 < distance_from_template(a, t) < 0.8
    # A copy stays a copy with the template ignored.
    copy = fingerprint(DISGUISES["all"](a_src, 0))
    assert similarity(a, copy, template=t) >= FLAG_THRESHOLD


# ---------------------------------------------------------------------------------------------
# Normalization


def test_normalization_keeps_the_library_and_drops_the_candidates_choices() -> None:
    one = tokens("import numpy as np\n\ndef f(x, axis=0):\n    total: float = np.sum(x.T, axis=1)  # sum\n"
                 "    return total * 2\n")
    two = tokens("from numpy import *\nimport numpy\n\ndef f(arr, ax=3):\n    '''Doc.'''\n"
                 "    s = numpy.sum(arr.T, axis=7)\n\n    return (s * 2.5)\n")
    assert one == two
    stream = one["f"]
    assert "Name=numpy" in stream and "Attr.sum" in stream and "Attr.T" in stream and "kw:axis" in stream
    assert not any("total" in t or "float" in t for t in stream)
    # A different library call is a different program.
    assert tokens("import numpy as np\ndef f(x):\n    return np.mean(x.T, axis=1) * 2\n")["f"] != stream


def test_names_of_the_candidates_own_code_are_roles() -> None:
    src = ("class Net:\n    def __init__(self, d):\n        self.w = d\n"
           "    def run(self, x):\n        return helper(self.w, x, scale=2)\n"
           "def helper(a, b, scale):\n    return a @ b * scale\n")
    renamed = ("class Model:\n    def __init__(me, d):\n        me.weights = d\n"
               "    def run(me, inp):\n        return util(me.weights, inp, factor=2)\n"
               "def util(p, q, factor):\n    return p @ q * factor\n")
    assert list(tokens(src).values()) == list(tokens(renamed).values())


def test_dead_code_is_dropped() -> None:
    plain = "def f(x):\n    y = x + 1\n    return y * y\n"
    dead = ("def f(x):\n    unused = 0\n    if False:\n        print('debug')\n    y = x + 1\n    assert True\n"
            "    x\n    pass\n    while 0:\n        y = 2\n    return y * y\n")
    assert tokens(plain) == tokens(dead)
    assert tokens("def f(x):\n    if True:\n        return x\n") == tokens("def f(x):\n    return x\n")


def test_function_order_does_not_matter() -> None:
    src = (ROOT / "tests" / "solutions" / "rnn" / "correct_loops.py").read_text()
    assert fingerprint(src).hashes == fingerprint(DISGUISES["reordered"](src, 1)).hashes


# ---------------------------------------------------------------------------------------------
# Files that do not parse, and the stored form


@pytest.mark.parametrize(("source", "line"), [("def f(:\n    pass\n", 1), ("x = 1\n\nif x\n    y = 2\n", 3),
                                              ("def f():\n\treturn 1\n        return 2\n", 3),
                                              ("x = 1\x00\n", None)])
def test_a_file_that_does_not_parse_is_a_clear_error(source: str, line: int | None) -> None:
    with pytest.raises(NotParsable) as info:
        fingerprint(source, "solution.py")
    assert info.value.message.startswith("solution.py: ")
    assert info.value.line == line
    if line is not None:
        assert f"line {line}" in info.value.message
    assert info.value.status_code == 400


def test_deeply_nested_code_is_a_clear_error_not_a_crash() -> None:
    with pytest.raises(NotParsable):
        fingerprint("x = " + "(" * 100_000 + ")" * 100_000)
    for terms in (3_000, 50_000):  # parses at the first size, not at the second: both refused cleanly
        with pytest.raises(NotParsable, match="solution.py: "):
            fingerprint("def f(x):\n    return " + " + ".join(["x"] * terms) + "\n", "solution.py")


def test_fingerprints_round_trip_through_json() -> None:
    f = fp(ROOT / "reference" / "mlp.py")
    data = json.loads(f.to_json())
    assert data["version"] == 1 and data["k"] == f.k and data["w"] == f.w
    assert data["hashes"] == sorted(data["hashes"]) and all(0 <= h < 2**53 for h in data["hashes"])
    back = Fingerprint.from_json(f.to_json())
    assert back == f and similarity(back, f) == 1.0
    data["hashes"] = data["hashes"][1:]
    with pytest.raises(ValueError, match="corrupt"):
        Fingerprint.from_json(json.dumps(data))
    with pytest.raises(ValueError, match="version"):
        Fingerprint.from_json("[1, 2]")


def test_fingerprints_of_other_parameters_are_not_compared() -> None:
    src = (ROOT / "reference" / "gan.py").read_text()
    with pytest.raises(ValueError, match="fingerprint both files again"):
        similarity(fingerprint(src), fingerprint(src, k=5))
    old = Fingerprint(fingerprint(src).units, version=0)
    with pytest.raises(ValueError, match="version 1"):
        similarity(fingerprint(src), old)


def test_hashes_are_stable_across_processes() -> None:
    """Stored fingerprints stay comparable: the hash is blake2b, not the salted hash(). A change of
    the normalization that moves these numbers must bump VERSION."""
    f = fingerprint("import numpy as np\n\ndef f(x, w):\n    out = x.reshape(x.shape[0], -1) @ w\n"
                    "    return out, (x, w)\n")
    assert f.hashes == [90206951832101, 1641214216146286, 2121173564183542, 2201927489609892, 2548346289548896]


# ---------------------------------------------------------------------------------------------
# Properties


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(ALL_FILES), st.sampled_from(ALL_FILES), st.sampled_from(sorted(DISGUISES)),
       st.integers(0, 50))
def test_the_score_is_symmetric_and_in_range(a: Path, b: Path, disguise: str, seed: int) -> None:
    fa, fb = fp(a), fingerprint(DISGUISES[disguise](b.read_text(), seed))
    t = fingerprint(template(a.parent.name if a.parent.name in PROBLEMS else a.stem))
    for s, r in ((similarity(fa, fb), similarity(fb, fa)), (similarity(fa, fb, t), similarity(fb, fa, t))):
        assert 0.0 <= s <= 1.0
        assert s == r
    assert 0.0 <= distance_from_template(fa, t) <= 1.0


STATEMENTS = ["y = x * 2", "z = np.sum(x, axis=0)", "x = x.reshape(-1)", "for i in range(3):\n    y = y + i",
              "if x is None:\n    return 0", "y = [v ** 2 for v in x]", "x = np.maximum(x, 0)", "return x.T @ y"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(STATEMENTS), min_size=1, max_size=12), st.integers(1, 12), st.integers(1, 8))
def test_any_nontrivial_file_is_identical_to_itself(body: list[str], k: int, w: int) -> None:
    src = "import numpy as np\n\ndef f(x, y):\n" + "\n".join(
        "    " + line.replace("\n", "\n    ") for line in body) + "\n"
    f = fingerprint(src, k=k, w=w)
    if len(f):
        assert similarity(f, f) == 1.0
        assert similarity(f, fingerprint(src, k=k, w=w), template=fingerprint("", k=k, w=w)) == 1.0
    else:
        assert sum(len(s) for s in tokens(src).values()) < k + 2  # only a stream shorter than k is empty


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from("abcde"), max_size=40), st.lists(st.sampled_from("abcde"), max_size=40),
       st.lists(st.sampled_from("abcde"), min_size=1, max_size=30), st.integers(1, 6), st.integers(1, 6))
def test_winnowing_sees_every_long_enough_match(pre_a: list[str], pre_b: list[str], shared: list[str],
                                                k: int, w: int) -> None:
    """The guarantee of winnowing: a run of w + k - 1 tokens in both streams leaves a fingerprint
    in both; a run shorter than k leaves none of its own."""
    a, b = pre_a + shared + ["|"], ["|"] + pre_b + shared
    fa, fb = set(winnow(a, k, w)), set(winnow(b, k, w))
    if len(shared) >= w + k - 1:
        assert fa & fb
    assert winnow(shared[: k - 1], k, w) == []


# ---------------------------------------------------------------------------------------------
# The command


def test_similarity_main_prints_units_and_the_score_last(tmp_path: Path) -> None:
    a = ROOT / "tests" / "solutions" / "mlp" / "correct_loops.py"
    b = tmp_path / "copy.py"
    b.write_text(DISGUISES["all_and_noise"](a.read_text(), 0))
    score, text = similarity_main(a, b)
    lines = text.splitlines()
    assert lines[-1] == f"{score:.3f}" and float(lines[-1]) >= FLAG_THRESHOLD
    assert any(line.strip().startswith("affine_forward") and "~" in line for line in lines)
    score_t, text_t = similarity_main(a, b, template=template("mlp"))
    assert "template ignored" in text_t and text_t.splitlines()[-1] == f"{score_t:.3f}"
    other_score, other = similarity_main(a, ROOT / "reference" / "mlp.py")
    assert other.splitlines()[-1] == f"{other_score:.3f}" and other_score < FLAG_THRESHOLD


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="grader")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_the_command_exits_0_with_the_score_last(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = ROOT / "tests" / "solutions" / "gan" / "correct_autograd.py"
    assert run_cli(["similarity", str(a), str(a), "--problem", "gan"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "1.000"


@pytest.mark.parametrize("case", ["syntax", "missing", "binary", "unknown problem"])
def test_the_command_exits_2_with_a_message(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = ROOT / "tests" / "solutions" / "gan" / "correct_autograd.py"
    bad = tmp_path / "bad.py"
    bad.write_text("def f(:\n")
    if case == "binary":
        bad.write_bytes(b"\xff\xfe\x00junk")
    argv = ["similarity", str(good), str(bad if case != "missing" else tmp_path / "nope.py")]
    if case == "unknown problem":
        argv = ["similarity", str(good), str(good), "--problem", "no-such-problem"]
    assert run_cli(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("grader: ") and "Traceback" not in captured.err
    print(captured.err)


def test_a_notebook_is_compared_by_its_code_cells(tmp_path: Path) -> None:
    import nbformat

    source = (ROOT / "tests" / "solutions" / "rnn" / "correct_loops.py").read_text()
    head, _, rest = source.partition("\n\n\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# My LSTM"), nbformat.v4.new_code_cell(head),
                                         nbformat.v4.new_code_cell("%matplotlib inline\n" + rest)])
    path = tmp_path / "solution.ipynb"
    path.write_text(nbformat.writes(nb))
    score, text = similarity_main(path, ROOT / "tests" / "solutions" / "rnn" / "correct_loops.py",
                                  template=ROOT / "problems" / "rnn" / "template.py")
    assert score == 1.0 and text.splitlines()[-1] == "1.000"
