"""In-process sliding-window limits for ``POST /api/authenticate``.

Every secret check is a 16 MiB scrypt run, so the open token endpoint is capped before that
check: per source address (all attempts) and per client id (failed and in-flight attempts).
Unknown client ids share one key, so memory for client keys is bounded by the number of
tenants; address keys are bounded by ``max_keys`` (oldest dropped first). Behind a reverse
proxy every request has the proxy's address, so the per-address limit then applies to all.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

UNKNOWN_CLIENT = "<unknown>"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after: float = 0.0
    #: True for the first refusal of a key in a window (log that one only).
    first_refusal: bool = False

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))


class SlidingWindowLimiter:
    """At most ``limit`` hits per key in any ``window`` seconds. Thread-safe, bounded memory."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or window <= 0 or max_keys < 1:
            raise ValueError("limit and max_keys must be >= 1 and window > 0")
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._refused_until: dict[str, float] = {}

    def _trim(self, key: str, now: float) -> deque[float]:
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self.max_keys:
                self._evict(now)
            hits = self._hits[key] = deque(maxlen=self.limit)
        else:
            self._hits.move_to_end(key)
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return hits

    def _evict(self, now: float) -> None:
        for key in [k for k, h in self._hits.items() if not h or h[-1] <= now - self.window]:
            del self._hits[key]
            self._refused_until.pop(key, None)
        while len(self._hits) >= self.max_keys:
            key, _ = self._hits.popitem(last=False)
            self._refused_until.pop(key, None)

    def _refuse(self, key: str, hits: deque[float], now: float) -> Decision:
        retry = hits[0] + self.window - now
        first = self._refused_until.get(key, -math.inf) <= now
        if first:
            self._refused_until[key] = hits[0] + self.window
        return Decision(False, retry, first)

    def acquire(self, key: str) -> Decision:
        """Count a hit for ``key`` unless it is over the limit (then count nothing)."""
        with self._lock:
            now = self._clock()
            hits = self._trim(key, now)
            if len(hits) >= self.limit:
                return self._refuse(key, hits, now)
            hits.append(now)
            return Decision(True)

    def refund(self, key: str) -> None:
        """Take back the latest hit (an attempt that turned out to be fine)."""
        with self._lock:
            hits = self._hits.get(key)
            if hits:
                hits.pop()

    def __len__(self) -> int:
        with self._lock:
            return len(self._hits)


class TokenLimits:
    """Defaults: 10 failed attempts per client id and 30 attempts per address per 60 s."""

    def __init__(
        self,
        *,
        client_failures: int = 10,
        address_attempts: int = 30,
        window: float = 60.0,
        max_addresses: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.by_client = SlidingWindowLimiter(client_failures, window, max_keys=10_000, clock=clock)
        self.by_address = SlidingWindowLimiter(address_attempts, window, max_keys=max_addresses, clock=clock)
