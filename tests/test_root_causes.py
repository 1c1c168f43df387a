"""Root causes: a failure that follows from another is shown as such, by an experiment, never by a guess.

The algorithm (grader/engine/rootcause.py) on fake regradings first; then whole gradings: a wrong
affine_backward costs 29 points over four tests and is one root; two planted mistakes are two roots;
a correct solution starts no analysis; the points never move. Then the trust boundary: stand-ins
are answered on the host by a worker process of their own (grader/engine/standins.py), a host call
the session did not offer is a protocol violation, and a hostile argument costs the worker, not the
grader.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from grader.engine import GradingOptions, grade, rootcause, standins
from grader.engine.catalog import get_problem
from grader.engine.report import Report
from grader.isolation.base import StandInRefused
from grader.reports.html import SubmissionRow, render_report_page
from grader.reports.junit import case_name, render_junit
from grader.reports.text import render_text
from tests.conftest import SOLUTIONS
from tests.grading import backend_named, grade_submission

F = rootcause.Failure


def fake(passes: dict[tuple[str, frozenset[str]], bool], calls: dict[str, frozenset[str]] | None = None,
         log: list[tuple[str, frozenset[str]]] | None = None) -> rootcause.Regrade:
    """A regrade that passes a test exactly when it is graded with a listed set of stand-ins."""
    def regrade(test_id: str, functions: frozenset[str]) -> tuple[bool, frozenset[str]]:
        if log is not None:
            log.append((test_id, functions))
        used = (calls or {}).get(test_id, functions) & functions
        return any(t == test_id and need <= functions for (t, need), ok in passes.items() if ok), used
    return regrade


def fs(*names: str) -> frozenset[str]:
    return frozenset(names)


# -- the algorithm ------------------------------------------------------------------------------------


def test_one_root_and_its_followers() -> None:
    failures = [F("affine_backward", fs("affine_backward")), F("affine_gradcheck", fs("affine_backward")),
                F("net_grads", fs()), F("net_gradcheck", fs())]
    passes = {(t, fs("affine_backward")): True for t in ("affine_backward", "affine_gradcheck", "net_grads",
                                                          "net_gradcheck")}
    follows = rootcause.analyse(failures, fake(passes))
    # affine_backward and affine_gradcheck explain each other: the earlier one in the spec is the root.
    assert follows == {"affine_gradcheck": ["affine_backward"], "net_grads": ["affine_backward"],
                       "net_gradcheck": ["affine_backward"]}


def test_a_failure_of_its_own_stays_a_root() -> None:
    failures = [F("relu_backward", fs("relu_backward")), F("softmax", fs("softmax_cross_entropy")),
                F("net_grads", fs())]
    # net_grads passes only when relu_backward stands in; softmax fails whatever stands in.
    passes = {("net_grads", fs("relu_backward")): True, ("relu_backward", fs("relu_backward")): True}
    calls = {"net_grads": fs("relu_backward", "softmax_cross_entropy")}
    follows = rootcause.analyse(failures, fake(passes, calls))
    assert follows == {"net_grads": ["relu_backward"]}


def test_only_stand_ins_the_test_called_can_explain_it() -> None:
    log: list[tuple[str, frozenset[str]]] = []
    failures = [F("a", fs("f")), F("b", fs("g")), F("c", fs())]
    passes = {("c", fs("f")): True}
    follows = rootcause.analyse(failures, fake(passes, {"c": fs("f")}, log))
    assert follows == {"c": ["a"]}
    assert ("c", fs("g")) not in log  # c never called g while standing in: not tried alone


def test_two_roots_together() -> None:
    """A test that needs both functions right follows from both failures."""
    failures = [F("a", fs("f")), F("b", fs("g")), F("c", fs())]
    passes = {("c", fs("f", "g")): True}
    assert rootcause.analyse(failures, fake(passes)) == {"c": ["a", "b"]}


def test_a_chain_ends_at_its_root_and_a_cycle_at_its_earliest() -> None:
    failures = [F("a", fs("f")), F("b", fs()), F("c", fs())]
    # a explains b, b... has no suspects to explain c with; c passes with f: both follow from a
    passes = {("b", fs("f")): True, ("c", fs("f")): True}
    assert rootcause.analyse(failures, fake(passes)) == {"b": ["a"], "c": ["a"]}
    same = [F("a", fs("f")), F("b", fs("f")), F("c", fs("f"))]  # one mistake seen three times
    passes = {(t, fs("f")): True for t in "abc"}
    assert rootcause.analyse(same, fake(passes)) == {"b": ["a"], "c": ["a"]}


def test_a_stand_in_never_replaces_what_the_test_checks_itself() -> None:
    """Two mistakes: a test that calls f and g itself may not follow from f's failure (standing in f could make
    it pass though g is wrong too, or g alone is wrong): it stays a root of its own."""
    log: list[tuple[str, frozenset[str]]] = []
    failures = [F("checks_f", fs("f")), F("checks_f_and_g", fs("f", "g")), F("network", fs())]
    passes = {("checks_f_and_g", fs("f")): True, ("network", fs("f", "g")): True}
    follows = rootcause.analyse(failures, fake(passes, None, log))
    assert "checks_f_and_g" not in follows and "checks_f" not in follows
    assert all(t != "checks_f_and_g" for t, _ in log)  # never regraded with f standing in
    assert follows["network"] == ["checks_f_and_g"]  # the only failure whose suspects alone make it pass


def test_a_function_the_test_does_not_call_can_stand_in() -> None:
    """train_mlp is checked by its own test, but a wrong relu_backward inside it is not train_mlp's mistake."""
    failures = [F("relu_backward", fs("relu_forward", "relu_backward")), F("train_mlp", fs("train_mlp"))]
    passes = {("train_mlp", fs("relu_forward", "relu_backward")): True}
    assert rootcause.analyse(failures, fake(passes)) == {"train_mlp": ["relu_backward"]}


def test_bounded_and_timeouts_left_alone() -> None:
    log: list[tuple[str, frozenset[str]]] = []
    failures = [F("t0", fs("f"))] + [F(f"t{i}", fs()) for i in range(1, 10)] + [F("slow", fs(), retry=False)]
    rootcause.analyse(failures, fake({}, None, log), max_regrades=4)
    assert len(log) == 4 and all(t != "slow" for t, _ in log)

    def out_of_budget(test_id: str, functions: frozenset[str]) -> tuple[bool, frozenset[str]]:
        raise rootcause.OutOfBudget

    assert rootcause.analyse(failures, out_of_budget) == {}


def test_forward_and_backward_stand_in_together() -> None:
    available = fs("affine_forward", "affine_backward", "relu_forward", "conv2d_flipped_forward")
    assert standins.with_partners(fs("affine_backward"), available) == fs("affine_forward", "affine_backward")
    assert standins.with_partners(fs("relu_forward"), available) == fs("relu_forward")
    assert standins.with_partners(fs("sgd_step"), available) == fs("sgd_step")


# -- whole gradings ---------------------------------------------------------------------------------------


def mlp(name: str) -> dict[str, str]:
    return {"solution.py": (SOLUTIONS / "mlp" / name).read_text()}


def two_mistakes() -> dict[str, str]:
    source = (SOLUTIONS / "mlp" / "wrong_db_mean.py").read_text()
    relu = (SOLUTIONS / "mlp" / "wrong_relu_mask_inverted.py").read_text()
    # the inverted mask of the other file, planted into this one
    start = relu.index("def relu_backward")
    end = relu.index("\ndef ", start + 1)
    mine_start = source.index("def relu_backward")
    mine_end = source.index("\ndef ", mine_start + 1)
    return {"solution.py": source[:mine_start] + relu[start:end] + source[mine_end:]}


def check_db_mean(report: Report) -> None:
    by_id = {t.id: t for t in report.tests}
    assert [c.model_dump() for c in report.root_causes] == [
        {"test": "affine_backward", "functions": ["affine_backward"],
         "followers": ["affine_gradcheck", "net_grads", "net_gradcheck"], "points_lost": 29.0}]
    for follower in ("affine_gradcheck", "net_grads", "net_gradcheck"):
        assert by_id[follower].caused_by == ["affine_backward"]
        assert by_id[follower].earned == 0  # points stay as the spec gives them
    assert by_id["affine_backward"].caused_by == []


def test_one_bug_one_root_in_process() -> None:
    report = grade_submission("mlp", mlp("wrong_db_mean.py"), backend="inprocess", root_causes=True)
    check_db_mean(report)
    plain = grade("mlp", mlp("wrong_db_mean.py"), backend=backend_named("inprocess"),
                  options=GradingOptions(root_causes=False))
    assert plain.root_causes == [] and plain.score == report.score
    assert [(t.id, t.earned, t.status) for t in plain.tests] == [(t.id, t.earned, t.status) for t in report.tests]


def test_two_mistakes_two_roots() -> None:
    report = grade_submission("mlp", two_mistakes(), backend="inprocess", root_causes=True)
    roots = {c.test: c for c in report.root_causes}
    assert set(roots) == {"affine_backward", "relu_backward"}, report.root_causes
    assert roots["affine_backward"].functions == ["affine_backward"]
    assert roots["relu_backward"].functions == ["relu_backward"]
    by_id = {t.id: t for t in report.tests}
    # the network's gradients need both right: they follow from both
    assert by_id["net_grads"].caused_by == ["affine_backward", "relu_backward"]
    assert by_id["affine_gradcheck"].caused_by == ["affine_backward"]


def test_correct_and_single_failures_start_no_analysis(monkeypatch: pytest.MonkeyPatch) -> None:
    analysed: list[int] = []
    real = rootcause.analyse
    monkeypatch.setattr(rootcause, "analyse", lambda failures, regrade, **kw: analysed.append(1) or real(
        failures, regrade, **kw))
    for files in (mlp("correct_vectorized.py"), mlp("wrong_softmax_unstable.py")):
        report = grade_submission("mlp", files, backend="inprocess", root_causes=True)
        assert report.root_causes == [] and not any(t.caused_by for t in report.tests)
    assert analysed == []
    grade_submission("mlp", mlp("wrong_db_mean.py"), backend="inprocess", root_causes=True)
    assert analysed == [1]  # the same counter sees an analysis when there is one


def test_a_missing_function_is_its_own_explanation(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that failed for a name the submission lacks says so itself: it is neither regraded nor a root, and
    an unfinished submission pays no regrading for what it never wrote; a real mistake beside it is still found."""
    analysed: list[list[str]] = []
    real = rootcause.analyse
    monkeypatch.setattr(rootcause, "analyse", lambda failures, regrade, **kw: analysed.append(
        [f.test_id for f in failures]) or real(failures, regrade, **kw))
    report = grade_submission("mlp", {"solution.py": "x = 1\n"}, backend="inprocess", root_causes=True)
    assert report.score == 0 and report.root_causes == [] and analysed == []
    source = mlp("wrong_db_mean.py")["solution.py"]
    unfinished = source[:source.index("def sgd_step")]  # sgd_step and train_mlp never written
    report = grade_submission("mlp", {"solution.py": unfinished}, backend="inprocess", root_causes=True)
    by_id = {t.id: t for t in report.tests}
    assert "does not define `sgd_step`" in by_id["sgd_step"].message
    assert "does not define `train_mlp`" in by_id["train_mlp"].message
    assert analysed and not {"sgd_step", "train_mlp"} & set(analysed[-1])
    check_db_mean(report)  # the real mistake: one root, the same followers
    assert by_id["sgd_step"].caused_by == [] and by_id["train_mlp"].caused_by == []
    # A NameError for a name the exercise never asks for is a typo inside a function: a mistake like another.
    typo = source.replace("db = dout.mean(axis=0)", "db = nmp.sum(dout, axis=0)")
    report = grade_submission("mlp", {"solution.py": typo}, backend="inprocess", root_causes=True)
    assert "does not define `nmp`, which affine_backward calls" in {t.id: t for t in report.tests}[
        "affine_backward"].message
    roots = {c.test: c.followers for c in report.root_causes}
    assert list(roots) == ["affine_backward"], roots
    # train_mlp follows too, but its regrading trains through stand-in calls: on a loaded machine the analysis's
    # wall budget (15 s here) can end before it, which only shortens the list (the rule of rootcause.py).
    followers = roots["affine_backward"]
    assert followers[:4] == ["affine_gradcheck", "net_loss", "net_grads", "net_gradcheck"], roots
    assert followers[4:] in ([], ["train_mlp"]), roots


def test_a_shared_follower_splits_its_loss_between_its_roots() -> None:
    report = grade_submission("mlp", two_mistakes(), backend="inprocess", root_causes=True)
    lost = sum(t.points - t.earned for t in report.tests if t.status != "passed")
    explained = {t.id for c in report.root_causes for t in report.tests if t.id == c.test or t.id in c.followers}
    assert sum(c.points_lost for c in report.root_causes) == pytest.approx(
        sum(t.points - t.earned for t in report.tests if t.id in explained))
    assert sum(c.points_lost for c in report.root_causes) <= lost


def test_candidates_never_see_root_causes_that_involve_a_hidden_test() -> None:
    report = grade_submission("mlp", mlp("wrong_relu_mask_inverted.py"), backend="inprocess", root_causes=True)
    train = next(t for t in report.tests if t.id == "train_mlp")
    assert train.hidden and train.caused_by == ["relu_backward"]  # the interviewer sees it
    view = report.candidate_view()
    assert all(t.caused_by == [] for t in view.tests if t.hidden)
    assert all("train_mlp" not in c.followers for c in view.root_causes)
    assert "train_mlp" not in render_junit(view).split("caused_by")[-1] or not view.root_causes
    assert all(c.test != "train_mlp" for c in view.root_causes)


def test_views_lead_with_the_root() -> None:
    report = grade_submission("mlp", mlp("wrong_db_mean.py"), backend="inprocess", root_causes=True)
    text = render_text(report)
    assert "ROOT affine_backward (affine_backward): 29 points lost with 3 failure(s)" in text
    assert "net_grads  (backward)  follows from affine_backward" in text
    junit = ET.fromstring(render_junit(report))
    net_grads = next(t for t in report.tests if t.id == "net_grads")
    case = next(c for c in junit.iter("testcase") if c.get("name") == case_name(net_grads))
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["caused_by"] == "affine_backward"
    failure = case.find("failure")
    assert failure is not None and (failure.text or "").startswith("follows from the failure of affine_backward")
    row = SubmissionRow(id="s1", problem="mlp", candidate="c", status="done", score=report.score,
                        max_score=report.max_score)
    page = render_report_page(submission=row, report=report, files=mlp("wrong_db_mean.py"), standalone=True)
    assert page.index('id="root-causes"') < page.index('id="tests"')
    assert "29 points</strong> lost" in page
    failing = page[page.index('id="tests"'):]
    # among the failing tests, the root comes before the three that follow from it
    assert failing.index("affine_backward") < failing.index("Follows from")


@pytest.mark.slow
@pytest.mark.usefixtures("sandbox_backend")
def test_one_bug_one_root_in_the_sandbox() -> None:
    check_db_mean(grade_submission("mlp", mlp("wrong_db_mean.py"), root_causes=True))


# -- the trust boundary ----------------------------------------------------------------------------------

FORGER = '''
import gc
import sandbox.wire as wire
''' + (SOLUTIONS / "mlp" / "correct_vectorized.py").read_text() + '''

def relu_forward(x):
    # Speak for the host: a stand-in call nobody offered.
    runner = next(o for o in gc.get_objects() if type(o).__name__ == "Runner")
    wire.send(runner.proto_out, {"host_call": "relu_forward"}, ([x], {}))
    return wire.receive(runner.proto_in)
'''


@pytest.mark.slow
@pytest.mark.usefixtures("sandbox_backend")
def test_a_host_call_nobody_offered_is_a_protocol_violation() -> None:
    report = grade_submission("mlp", {"solution.py": FORGER}, root_causes=True)
    relu = next(t for t in report.tests if t.id == "relu_forward")
    assert relu.status == "error" and relu.earned == 0
    assert "not offered" in relu.message, relu.message
    # a submission that broke the protocol is not analysed (its regradings would only break it again)
    assert report.root_causes == []


def worker_processes() -> list[int]:
    """Stand-in workers alive now (this machine's /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"grader.standin_worker" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_hostile_arguments_cost_the_worker_not_the_grader() -> None:
    worker = standins.StandInWorker("cnn", get_problem("cnn").sandbox.limits.wire_limits())
    try:
        x, w, b = np.ones((1, 1, 2, 2)), np.ones((1, 1, 1, 1)), np.zeros(1)
        out, _ = worker("conv2d_forward", [x, w, b], {"stride": 1, "pad": 1})[0]
        assert out.shape == (1, 1, 4, 4)
        pid = worker_processes()
        # a padding that asks for 14001**2 * 8 bytes = 1.6 GB (numpy would allocate it): past the worker's own
        # address-space limit of 1 GB, a MemoryError there and a refusal here, the grader untouched
        with pytest.raises(StandInRefused, match="MemoryError"):
            worker("conv2d_forward", [x, w, b], {"stride": 1, "pad": 7000})
        assert worker_processes() == pid  # a refusal from the reference keeps the worker
        with pytest.raises(StandInRefused, match="LookupError"):
            worker("__import__", ["os"], {})  # only the reference's own functions run there
    finally:
        worker.close()
    assert worker_processes() == []


def test_no_worker_outlives_its_grading() -> None:
    report = grade_submission("mlp", mlp("wrong_db_mean.py"), backend="inprocess", root_causes=True)
    assert report.root_causes
    assert worker_processes() == []


def test_a_host_call_for_a_name_not_offered_ends_the_session() -> None:
    from grader.isolation.base import ProtocolViolation

    session = backend_named("inprocess").start(get_problem("mlp").sandbox)
    try:
        assert session.load({"solution.py": FORGER}, "solution.py", 10).ok
        answered: list[str] = []
        assert session.stand_in(["affine_forward"], lambda name, a, k: answered.append(name), 10).ok
        with pytest.raises(ProtocolViolation, match="not offered"):
            session.call({"fn": "relu_forward"}, (np.ones(3),), timeout_s=10)
        assert answered == [] and session.dead
    finally:
        session.close()


def test_a_stand_in_writes_back_what_it_changed() -> None:
    """batchnorm_forward's running statistics land in the caller's dict, as the reference's own would."""
    from sandbox.runner import _write_back

    bn_param = {"mode": "train", "running_mean": np.zeros(3), "running_var": np.ones(3)}
    kept = bn_param["running_mean"]
    after = {"mode": "train", "running_mean": np.full(3, 0.5), "running_var": np.full(3, 2.0), "new": 1}
    _write_back(bn_param, after)
    assert kept is bn_param["running_mean"] and np.all(kept == 0.5)
    assert np.all(bn_param["running_var"] == 2.0) and bn_param["new"] == 1


def test_regularization_running_statistics_through_a_stand_in() -> None:
    source = (SOLUTIONS / "regularization" / "wrong_bn_backward_no_mean_var_terms.py").read_text()
    report = grade_submission("regularization", {"solution.py": source}, backend="inprocess", root_causes=True)
    causes = {c.test: c.followers for c in report.root_causes}
    assert causes == {"bn_backward": ["bn_gradcheck", "bn_stability"]}, report.root_causes


def test_reference_dir_is_where_the_worker_runs() -> None:
    assert (Path(standins.ROOT) / "reference" / "mlp.py").is_file()


@pytest.mark.slow
def test_a_submission_that_crashes_its_sandbox_is_not_analysed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Root causes explain wrong values: a crash (or a hang, or a flood of output) would be paid again in every
    regrading, so such a submission is graded without the analysis."""
    analysed: list[int] = []
    real = rootcause.analyse
    monkeypatch.setattr(rootcause, "analyse", lambda failures, regrade, **kw: analysed.append(1) or real(
        failures, regrade, **kw))
    source = mlp("wrong_db_mean.py")["solution.py"] + "\n\ndef relu_forward(x):\n    import os\n    os._exit(3)\n"
    report = grade_submission("mlp", {"solution.py": source}, backend="local", root_causes=True)
    assert next(t for t in report.tests if t.id == "relu_forward").status == "error"
    assert sum(t.status != "passed" for t in report.tests) >= 2
    assert analysed == [] and report.root_causes == []
