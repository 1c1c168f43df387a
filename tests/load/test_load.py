"""The load test in CI: a small burst of the benchmark's own code (benchmarks/load.py) against a real server.

The burst is larger than the tokens' rate limits allow at once, so the server must answer 429 with Retry-After,
and the generator waits and retries with the same Idempotency-Key. Correctness is asserted: every submission is
accepted in the end, each accepted one ends with exactly one report, nothing is stored twice, every 429 carried
Retry-After and no request was refused for any other reason. The latencies and memory are printed, not
asserted (a shared machine's timing is no verdict): benchmarks/load.py measures them at full size for README.
"""

from __future__ import annotations

import pytest

from benchmarks.load import parse_mix, render, run

pytestmark = [pytest.mark.slow, pytest.mark.load]


def test_a_burst_over_the_rate_limits_loses_nothing_and_duplicates_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # 3 tokens x burst 4 = 12 accepted at once, then 2 per second per token: 40 submissions need about 5 s of
    # 429s. Trivial and hostile submissions, plus a few known-wrong ones of the numpy exercises: the drain
    # stays around a minute on 2 cores.
    figures = run(n=40, tokens=3, burst=4, per_min=120, seed=7, problems=["mlp", "rnn", "regularization", "cnn"],
                  mix=parse_mix("trivial=5,hostile=4,wrong=1"), concurrency=16, read_rate=10, drain_timeout_s=600,
                  root=tmp_path)
    print("\n" + render(figures, {"n": 40, "tokens": 3, "burst": 4, "per_min": 120, "seed": 7}))
    assert figures.errors == [], figures.errors
    assert figures.accepted == 40
    assert figures.lost == [] and figures.duplicated == []
    assert figures.graded + figures.failed == 40
    assert figures.failed == 0, "no submission of the burst should exhaust its attempts"
    assert figures.refused_429 > 0, "the burst is over the limits: some POSTs must have been answered 429"
    assert figures.refused_429_without_retry_after == 0
    assert figures.drain_s is not None, "the queue did not drain"
    assert figures.reads > 0 and figures.read_errors == 0
