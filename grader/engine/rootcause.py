"""Root causes: which failed tests follow from another's mistake (GRADING.md, "One mistake, one root").

A wrong `affine_backward` fails its own test and every test built on it (the gradient check, the
network's gradients, training). The evidence that one failure follows from another is an
experiment, not a guess from names: grade the dependent test again with the reference standing in
for the functions the other failed test called (grader/engine/standins.py; the reference never
enters the sandbox, its results do). If it then passes, its failure follows from those functions.

`analyse` is that algorithm, on a `regrade(test_id, functions) -> (passed, functions it called)` the
engine supplies:

0. A failed test's suspects are the functions it called itself that the reference can stand in for,
   with the other half of each forward/backward pair (a backward reads its own forward's cache).
   A stand-in never replaces a function the regraded test calls itself, unless that test has the
   very same suspects (`affine_gradcheck` and `affine_backward`: one mistake seen twice): standing
   in what a test checks makes it pass whatever else is wrong, so two mistakes are never told as
   one. A test that reaches the functions only through the candidate's own code (a network, a
   training loop) can follow from any failure.
1. Every failed test B is graded once with all the other failures' functions standing in together.
   Still failing: B has a mistake of its own (a root), and no pair is tried.
2. Otherwise B follows from the failures whose functions it called while standing in (the host
   sees every stand-in call); when that is more than one, each is tried alone and B follows from
   every one whose functions alone make it pass (or, when none does alone, from all of them).
3. Two tests that explain each other (they call the same functions: `affine_backward` and
   `affine_gradcheck`) are one mistake: the earlier in the spec is the root. Chains are followed
   to their roots.

The analysis changes no points (the spec's points stand) and is bounded: at most `max_regrades`
gradings, stopped earlier by the caller's budget (`regrade` raises `OutOfBudget`); its wall-clock
limits make it the one part of a report a very busy machine can shorten (fewer roots shown, never
a different score). It is evidence for an interviewer, not a proof: a candidate's code that behaves
differently when proxies are present can mislead it, and only its narrative. A failure
whose test called none of the functions the reference can stand in for explains nothing; one
that timed out or crashed its sandbox is left alone (trying it again costs its whole limit).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

MAX_REGRADES = 16


class OutOfBudget(Exception):
    """The analysis may not spend more time: what is known so far is kept."""


@dataclass(frozen=True)
class Failure:
    test_id: str
    # Its suspects: the functions it called that the reference can stand in for (with their forward/backward halves).
    functions: frozenset[str]
    retry: bool = True  # False for a test that must not be graded again (a timeout)


Regrade = Callable[[str, frozenset[str]], tuple[bool, frozenset[str]]]


def analyse(failures: Sequence[Failure], regrade: Regrade,
            max_regrades: int = MAX_REGRADES) -> dict[str, list[str]]:
    """Follower test id -> the ids of its root failures, for `failures` in spec order."""
    order = {f.test_id: i for i, f in enumerate(failures)}
    explainers = [f for f in failures if f.functions]
    edges: dict[str, list[str]] = {}  # follower -> the failures whose functions make it pass
    spent = 0

    def attempt(test_id: str, functions: frozenset[str]) -> tuple[bool, frozenset[str]]:
        nonlocal spent
        if spent >= max_regrades:
            raise OutOfBudget
        spent += 1
        return regrade(test_id, functions)

    try:
        for b in failures:
            # A stand-in never replaces what B calls itself, unless B checks exactly the same functions (the same
            # mistake seen twice): B would pass for a trivial reason.
            others = [a for a in explainers
                      if a.test_id != b.test_id and (a.functions == b.functions or not a.functions & b.functions)]
            if not b.retry or not others:
                continue
            passed, used = attempt(b.test_id, frozenset().union(*(a.functions for a in others)))
            if not passed:
                continue
            # Only failures whose functions the test actually called can explain it.
            involved = [a for a in others if a.functions & used] or others
            if len(involved) == 1:
                edges[b.test_id] = [involved[0].test_id]
                continue
            alone = [a.test_id for a in involved if attempt(b.test_id, a.functions)[0]]
            edges[b.test_id] = alone or [a.test_id for a in involved]
    except OutOfBudget:
        pass
    # Mutual explanations are one mistake: the earlier test keeps the blame.
    for follower, sources in list(edges.items()):
        edges[follower] = [s for s in sources if not (follower in edges.get(s, ()) and order[follower] < order[s])]
        if not edges[follower]:
            del edges[follower]
    return {follower: _roots(follower, edges, order) for follower in edges}


def _roots(test_id: str, edges: dict[str, list[str]], order: dict[str, int]) -> list[str]:
    """The failures at the end of every chain of explanations that starts at `test_id`."""
    roots: set[str] = set()
    seen = {test_id}
    stack = list(edges.get(test_id, ()))
    while stack:
        source = stack.pop()
        if source in seen:
            continue
        seen.add(source)
        if source in edges:
            stack.extend(edges[source])
        else:
            roots.add(source)
    if not roots:  # a cycle of three or more: the earliest of it is the root
        roots.add(min(seen - {test_id}, key=order.__getitem__))
    return sorted(roots, key=order.__getitem__)
