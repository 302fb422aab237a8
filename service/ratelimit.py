"""Per-key request limits: a token bucket for each caller (an API key's name, or the client's
address when the API is open), so one caller that floods gets 429 while the others are served."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

# Callers idle this long are forgotten, so the table stays small whatever the traffic.
IDLE_SECONDS = 600.0
MAX_CALLERS = 100_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`rate` requests per second with bursts of `burst`, per caller. A rate of 0 is off."""

    def __init__(self, rate: float, burst: int = 0, clock=time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def capacity(self, rate: float) -> float:
        return float(self.burst) if self.burst > 0 else max(1.0, 2.0 * rate)

    def take(self, caller: str, rate: float | None = None) -> float:
        """Take one token for `caller`; returns 0 when allowed, else the seconds until the
        next token (the Retry-After). `rate` overrides the default for this caller."""
        rate = self.rate if rate is None else rate
        if rate <= 0:
            return 0.0
        capacity = self.capacity(rate)
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(caller)
            if bucket is None:
                if len(self._buckets) >= MAX_CALLERS:
                    self._forget(now)
                bucket = self._buckets[caller] = _Bucket(capacity, now)
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / rate

    def wait(self, caller: str, rate: float | None = None) -> float:
        """Seconds until `caller` has a token again (0: it has one now), taking none."""
        rate = self.rate if rate is None else rate
        if rate <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(caller)
            if bucket is None:
                return 0.0
            tokens = min(self.capacity(rate), bucket.tokens + (now - bucket.updated) * rate)
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / rate

    def _forget(self, now: float) -> None:
        idle = [k for k, b in self._buckets.items() if now - b.updated > IDLE_SECONDS]
        for key in idle or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[key]


def retry_after(seconds: float) -> str:
    """A Retry-After header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
