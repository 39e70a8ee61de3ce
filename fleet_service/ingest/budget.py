"""Per-unit ingest budgets: token buckets of messages and bytes per second, so one unit cannot flood the rest.

A message over its unit's budget is not queued, not stored and not acknowledged: a real agent keeps it in its
outbox and sends it again later, within budget, so a busy unit is slowed down, never robbed. What is refused is
counted per unit (`Device.ingest_throttled`, shown by the API and the dashboard). With several replicas each
applies the budget to its share of the messages.

Presence (`state`) is charged but never refused: a unit's Will is published once, by the broker, and never
again, and a refused birth would leave a connected unit `offline`. It is one retained message per connection,
so it cannot flood anything.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

from protocol.payloads import MAX_PAYLOAD_BYTES


@dataclass(slots=True)
class _Bucket:
    messages: float
    bytes: float
    at: float


class UnitBudgets:
    def __init__(self, messages_per_s: float, bytes_per_s: float, burst_s: float = 10.0) -> None:
        self.messages_per_s = messages_per_s
        self.bytes_per_s = bytes_per_s
        self.message_burst = max(1.0, messages_per_s * burst_s)
        self.byte_burst = max(2.0 * MAX_PAYLOAD_BYTES, bytes_per_s * burst_s)  # a full-size message always fits
        self.refused: Counter[str] = Counter()  # by unit, since the last take_refused()
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, unit: str, size: int) -> bool:
        """Take one message of `size` bytes from the unit's budget if it fits; count a refusal if not."""
        bucket = self._refilled(unit)
        if bucket.messages >= 1 and bucket.bytes >= size:
            bucket.messages -= 1
            bucket.bytes -= size
            return True
        self.refused[unit] += 1
        return False

    def charge(self, unit: str, size: int) -> None:
        """Take a message that must never be refused: the budget may go below zero, delaying what follows."""
        bucket = self._refilled(unit)
        bucket.messages -= 1
        bucket.bytes -= size

    def _refilled(self, unit: str) -> _Bucket:
        now = time.monotonic()
        bucket = self._buckets.get(unit)
        if bucket is None:
            if len(self._buckets) > 200_000:  # ids come from authenticated units, but stay bounded anyway
                self._buckets.clear()
            bucket = self._buckets[unit] = _Bucket(self.message_burst, self.byte_burst, now)
        elapsed = now - bucket.at
        bucket.at = now
        bucket.messages = min(self.message_burst, bucket.messages + elapsed * self.messages_per_s)
        bucket.bytes = min(self.byte_burst, bucket.bytes + elapsed * self.bytes_per_s)
        return bucket

    def take_refused(self) -> Counter[str]:
        """The refusals counted since the last call (for the periodic write to the database)."""
        refused, self.refused = self.refused, Counter()
        return refused
