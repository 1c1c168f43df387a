"""Abuse limits kept in memory: token buckets per API token, and a lockout of client addresses that keep failing
to authenticate.

Both are per API process: a cluster of N API processes behind a load balancer allows up to N times each rate
(and N times the failed attempts before every process has locked an address out). They need no database or
broker, so a flood of requests costs no writes; the price is that a restart forgets them.

Memory is bounded: a key whose state carries no information any more (a bucket refilled to full, an address
whose failures have all left the window) is dropped, and when `max_keys` keys are held the least recently
seen one is dropped first. A flood of distinct keys (addresses, say) therefore costs at most `max_keys` entries;
what it can buy is that an old, quiet entry is forgotten early, which only ever favours the client it belonged to.
A locked-out address is the exception: it is never dropped before its lockout ends (AuthFailureTracker).

A clock can be injected (a `Callable[[], float]` of seconds, monotonic), so tests advance time by hand.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from grader.config import Settings

Clock = Callable[[], float]
DEFAULT_MAX_KEYS = 10_000
OVERFLOW = "(overflow)"  # the AuthFailureTracker key shared by addresses once every entry is locked


@dataclass
class _Bucket:
    tokens: float
    updated_s: float


@dataclass(frozen=True)
class Decision:
    """The answer to one `take`: allowed, or refused with the seconds until one more would be allowed."""

    allowed: bool
    retry_after_s: float = 0.0


class TokenBucket:
    """Per-key token buckets: each key may spend `capacity` at once, refilled at `per_minute` per minute.

    A key seen for the first time starts with a full bucket. Thread-safe.
    """

    def __init__(self, per_minute: float, capacity: float, *, clock: Clock = time.monotonic,
                 max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if per_minute <= 0 or capacity < 1:
            raise ValueError(f"a token bucket needs per_minute > 0 and capacity >= 1 (got {per_minute}, {capacity}); "
                             "to switch a limit off, do not create its bucket")
        self.rate_per_s = per_minute / 60.0
        self.capacity = float(capacity)
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: Hashable, cost: float = 1.0) -> Decision:
        """Spend `cost` from `key`'s bucket if it holds that much; otherwise say how long until it will."""
        with self._lock:
            now = self._clock()
            bucket = self._buckets.pop(key, None)
            if bucket is None:
                bucket = _Bucket(tokens=self.capacity, updated_s=now)
            else:
                elapsed = max(0.0, now - bucket.updated_s)
                bucket.tokens = min(self.capacity, bucket.tokens + elapsed * self.rate_per_s)
                bucket.updated_s = now
            self._evict(now)  # the others only: this key is out of the table until it goes back in, last
            self._buckets[key] = bucket
            if bucket.tokens >= cost:
                bucket.tokens -= cost
                return Decision(True)
            return Decision(False, (cost - bucket.tokens) / self.rate_per_s)

    def _evict(self, now: float) -> None:
        # Oldest first: a bucket that has had time to refill to full is the same as no bucket (lossless).
        while self._buckets:
            key, oldest = next(iter(self._buckets.items()))
            full_again = oldest.tokens + (now - oldest.updated_s) * self.rate_per_s >= self.capacity
            if full_again or len(self._buckets) >= self._max_keys:
                del self._buckets[key]
            else:
                break

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)


@dataclass
class _Failures:
    times_s: list[float]
    locked_until_s: float = 0.0


class AuthFailureTracker:
    """Failed authentications per client address in a sliding window; `limit` of them lock the address out.

    A locked-out address is refused (before its token is even looked up) until `window_s` after the failure
    that locked it, whatever it sends, a valid token included: otherwise an attacker could keep guessing and
    only the guesses would be refused. The other addresses are unaffected. Thread-safe.

    A locked entry is never evicted before its lockout ends, so a flood of failures from other addresses
    cannot undo a lockout (only entries that are not locked make room, least recently seen first). Should
    `max_keys` addresses be locked out at once, an address with no entry of its own shares one entry, OVERFLOW,
    with every other such address: their failures add up and lock them out together (guessing stays bounded
    at `limit` per window for all of them; the price falls on addresses that fail while an attack that large
    goes on, and a valid token from an address that has no entry still works until that shared lockout).
    """

    def __init__(self, limit: int, window_s: float, *, clock: Clock = time.monotonic,
                 max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if limit < 1 or window_s <= 0:
            raise ValueError(f"an auth failure tracker needs limit >= 1 and window_s > 0 (got {limit}, {window_s})")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._max_keys = max_keys
        self._seen: OrderedDict[str, _Failures] = OrderedDict()
        self._repeats: OrderedDict[tuple[str, str], float] = OrderedDict()  # see `failed`'s `once`
        self._lock = threading.Lock()

    def locked_for(self, address: str) -> float:
        """Seconds `address` stays locked out; 0.0 when it is not."""
        with self._lock:
            entry = self._seen.get(address)
            if entry is None:
                entry = self._seen.get(OVERFLOW)  # an address without its own entry shares the overflow's
                if entry is None:
                    return 0.0
            return max(0.0, entry.locked_until_s - self._clock())

    def failed(self, address: str, *, once: str | None = None) -> int | None:
        """Count a failure; the failures in the window when this one locked the address out, else None.

        Returns a number once per lockout, so the caller can audit a lockout once and not every attempt.
        With `once` (a fingerprint of what failed, e.g. a hash of a login cookie a browser keeps sending), the
        same fingerprint from the same address counts once per window: a stale cookie is one failure, not one
        per page, while a guess (a new value each time) still counts every time.
        """
        with self._lock:
            now = self._clock()
            if once is not None:
                key = (address, once)
                seen_s = self._repeats.pop(key, None)
                if seen_s is not None and now - seen_s < self.window_s:
                    self._repeats[key] = seen_s
                    return None
                self._repeats[key] = now
                while len(self._repeats) > self._max_keys:
                    del self._repeats[next(iter(self._repeats))]
            entry = self._seen.pop(address, None)
            self._evict(now)  # the others only, as TokenBucket.take does
            if entry is None and len(self._seen) >= self._max_keys:  # every entry is locked: class docstring
                address = OVERFLOW
                entry = self._seen.pop(OVERFLOW, None)
            entry = entry or _Failures(times_s=[])
            entry.times_s = [t for t in entry.times_s if now - t < self.window_s]
            entry.times_s.append(now)
            del entry.times_s[:-self.limit]  # never more than `limit` kept per address
            self._seen[address] = entry
            if entry.locked_until_s <= now and len(entry.times_s) >= self.limit:
                entry.locked_until_s = now + self.window_s
                return len(entry.times_s)
            return None

    def _evict(self, now: float) -> None:
        # Stale entries (no failure in the window, not locked) go first, oldest first: dropping them is lossless.
        while self._seen:
            address, oldest = next(iter(self._seen.items()))
            if oldest.locked_until_s <= now and all(now - t >= self.window_s for t in oldest.times_s):
                del self._seen[address]
            else:
                break
        # Full: drop the least recently seen entry that is not locked. A locked one met on the way goes to the
        # back (so the next search does not walk over it again); it is never dropped before its lockout ends.
        for _ in range(len(self._seen)):
            if len(self._seen) < self._max_keys:
                return
            address, oldest = next(iter(self._seen.items()))
            if oldest.locked_until_s > now or address == OVERFLOW:  # the overflow goes only when stale
                self._seen.move_to_end(address)
            else:
                del self._seen[address]

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)


@dataclass
class AbuseLimits:
    """The limits of one API app: requests per token, submissions per token, failed authentications per address.

    A limit switched off in the settings (0 per minute) is None.
    """

    requests: TokenBucket | None
    submissions: TokenBucket | None
    auth_failures: AuthFailureTracker

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock = time.monotonic) -> AbuseLimits:
        """Requests may come in a burst of one minute's allowance; submissions in rate_limit_submissions_burst."""
        per_min = settings.rate_limit_requests_per_min
        requests = TokenBucket(per_min, max(1.0, per_min), clock=clock) if per_min > 0 else None
        per_min = settings.rate_limit_submissions_per_min
        submissions = (TokenBucket(per_min, settings.rate_limit_submissions_burst, clock=clock)
                       if per_min > 0 else None)
        tracker = AuthFailureTracker(settings.auth_failure_limit, settings.auth_failure_window_s, clock=clock)
        return cls(requests=requests, submissions=submissions, auth_failures=tracker)
