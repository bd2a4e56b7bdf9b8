"""Meters `detect run` could not handle (too little data to train, an unexpected error), tried
again later with backoff instead of at every cycle: the first failure is logged by the caller,
the later ones at DEBUG, and the meter's other work goes on meanwhile."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

FIRST_RETRY_SECONDS = 30.0
MAX_RETRY_SECONDS = 15 * 60.0


@dataclass
class _Retry:
    delay: float   # seconds from the last failure to the next attempt
    due: float     # when the next attempt may be made (clock seconds)
    failures: int


class HeldBack:
    """What failed lately, by key (a meter id, or a (purpose, meter id) pair), and when it
    may be tried again: FIRST_RETRY_SECONDS after the first failure, doubling up to
    MAX_RETRY_SECONDS."""

    def __init__(self, first: float = FIRST_RETRY_SECONDS, most: float = MAX_RETRY_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.first, self.most, self.clock = first, most, clock
        self.retries: dict[Hashable, _Retry] = {}

    def due(self, key: Hashable) -> bool:
        """True when the key may be tried now (it never failed, or its wait is over)."""
        retry = self.retries.get(key)
        return retry is None or self.clock() >= retry.due

    def failed(self, key: Hashable) -> tuple[bool, float]:
        """Record a failure; (whether it is the first one in a row, seconds until the next
        attempt)."""
        retry = self.retries.get(key)
        delay = self.first if retry is None else min(retry.delay * 2, self.most)
        self.retries[key] = _Retry(delay, self.clock() + delay, 1 if retry is None else retry.failures + 1)
        return retry is None, delay

    def succeeded(self, key: Hashable) -> bool:
        """Forget the key's failures; True when it had failed."""
        return self.retries.pop(key, None) is not None
