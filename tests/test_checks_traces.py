"""grader/engine/checks/traces.py on a toy counter.

Reference traces pass, known rules are named, probes separate them."""

from __future__ import annotations

from typing import Any

import pytest

from grader.engine.checks.traces import Rule, check_trace, cut, first_difference, name_the_mistake, same_value
from grader.engine.plan import CheckFailed


def counter(inputs: dict[str, Any], *, limit_offset: int = 0, reset_on_equal: bool = False) -> list[dict[str, Any]]:
    """Counts non-increasing steps and says stop at `limit`: a miniature early-stopping rule."""
    trace, count, last = [], 0, None
    for value in inputs["values"]:
        rising = last is None or value > last or (reset_on_equal and value == last)
        count = 0 if rising else count + 1
        last = value
        trace.append({"stop": count >= inputs["limit"] + limit_offset})
    return trace


RULES = [
    Rule("stops one step late", lambda i: counter(i, limit_offset=1)),
    Rule("an equal value resets the count", lambda i: counter(i, reset_on_equal=True)),
]


def observer(rule: Any, calls: list[int]) -> Any:
    """A candidate following `rule`, recording how many steps each observation asked for."""

    def observe(inputs: dict[str, Any], steps: int | None) -> list[dict[str, Any]]:
        calls.append(len(inputs["values"]) if steps is None else steps)
        return list(rule(inputs))[:steps]

    return observe


def test_same_value_is_exact_for_bools_and_ints_and_relative_for_floats() -> None:
    assert same_value(True, True) and not same_value(1, True) and not same_value(True, 1.0)
    assert same_value(3, 3) and not same_value(3, 4)
    assert same_value(1.0 + 1e-9, 1.0) and not same_value(1.0 + 1e-6, 1.0)
    assert not same_value(None, 1.0) and not same_value(float("nan"), float("nan"))


def test_cut_and_first_difference() -> None:
    trace = [{"stop": False}, {"stop": True}, {"stop": False}]
    assert cut(trace, lambda s: s["stop"]) == trace[:2]
    assert cut(trace, None) == trace
    assert first_difference([{"a": 1, "b": 2}], [{"a": 1, "b": 3}]) == (0, "b")
    assert first_difference([{"a": 1}], [{"a": 1, "b": 3}]) == (0, "b")
    assert first_difference([{"a": 1}], [{"a": 1}, {"a": 2}]) == (1, "a")
    assert first_difference([{"a": 1}, {"a": 5}], [{"a": 1}]) is None


def test_a_candidate_following_the_reference_passes_and_is_observed_once() -> None:
    calls: list[int] = []
    inputs = {"values": [3, 2, 2, 4, 1, 1, 1], "limit": 2}
    check_trace(observer(counter, calls), inputs, counter, "Counter", RULES, stop=lambda s: s["stop"])
    assert calls == [3]  # cut after the reference's first stop, at step 2


def test_a_known_rule_is_named_only_after_probes_separate_it() -> None:
    # On [1, 1] with limit 1 both rules say "no stop" at step 1: the short input cannot tell them apart.
    inputs = {"values": [1, 1], "limit": 1}
    probes = [{"values": [1, 2, 3], "limit": 1}, {"values": [5, 4, 3, 2], "limit": 1}]
    calls: list[int] = []
    with pytest.raises(CheckFailed, match="Counter: stops one step late"):
        check_trace(observer(RULES[0].run, calls), inputs, counter, "Counter", RULES[::-1], probes=probes,
                    stop=lambda s: s["stop"])
    assert calls == [2, 2, 3, 4]  # the failing input, then the whole input, then probes until one rule is left


def test_an_unknown_mistake_gets_the_generic_message_with_the_explanation() -> None:
    inputs = {"values": [3, 2, 1], "limit": 1}

    def never_stops(i: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"stop": False} for _ in i["values"]]

    with pytest.raises(CheckFailed, match=r"at step 1, stop is False; expected True \(one step down\)"):
        check_trace(observer(never_stops, []), inputs, counter, "Counter", RULES, stop=lambda s: s["stop"],
                    explain=lambda step: "one step down")


def test_name_the_mistake_returns_none_when_a_probe_fits_no_rule() -> None:
    inputs = {"values": [1, 1], "limit": 1}

    def odd(i: dict[str, Any]) -> list[dict[str, Any]]:
        # Looks like both rules on the short input, like neither on the probe.
        return counter(i, limit_offset=1) if len(i["values"]) < 3 else [{"stop": True}] * 3

    assert name_the_mistake(observer(odd, []), inputs, RULES, [{"values": [3, 2, 1], "limit": 1}]) is None
