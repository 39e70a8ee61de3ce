"""Event ids that mean the same on every replica: a position in each origin's own sequence.

Every service process numbers the events that arise in it 1, 2, 3 ... under a random origin name made at start.
Relayed events keep their origin's name and number, so each event is (origin, seq) everywhere. A stream's id
after an event is the position it has reached: for every origin this replica knows, the highest number delivered
(`"k3x9q2ab7f:1043,p8r7m1cd20:877"`). Each origin's events arrive in order, so that position says exactly which
events a client has had, whichever replica it resumes on; an origin it does not name has delivered nothing to it.

`Origins` keeps, per origin, the last number seen (`heads`), the first from which every later one is still in
the replay buffer (`floors`: raised when the buffer drops an event and when a relay gap is seen), and when it was
last heard from. An origin silent for long whose events have all left the buffer is retired: only its last number
is kept, so ids stop naming replicas that are gone but a client that saw their last events still resumes.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Mapping

ORIGIN_RE = re.compile(r"[a-z0-9]{1,16}")
MAX_ID_CHARS = 4096  # a longer Last-Event-ID is not one of ours ...
MAX_ID_ORIGINS = 256  # ... nor one naming more origins
MAX_SEQ_DIGITS = 18
RETIRE_AFTER_S = 600.0  # an origin heard from neither event nor heartbeat for this long, all out of the buffer
CLOCK_SLACK_MS = 5000  # clocks of replicas may differ this much when telling which process started first
MAX_RETIRED = 1024

# Why a stream cannot resume where the client asks (the `reason` of the `reset` event).
EXPIRED = "expired"  # events after the resume point are no longer held here
UNKNOWN = "unknown"  # not an id of this fleet's current replicas (another epoch, a restarted replica, garbage)
GAP = "gap"  # events were lost on the way between replicas while the stream was open


def new_origin() -> str:
    """A fresh origin name for this process: 10 hex digits, so two live processes never share one."""
    return secrets.token_hex(5)


def origin_for(name: str) -> str:
    """An origin name for a replica whose relay batches carry none (an older version): the same on every replica."""
    return hashlib.blake2s(name.encode(), digest_size=5).hexdigest()


def encode(position: Mapping[str, int]) -> str:
    return ",".join(f"{origin}:{seq}" for origin, seq in position.items())


def decode(text: str | None) -> dict[str, int] | None:
    """A position from a Last-Event-ID, or None when the text is not one of ours."""
    if not text or len(text) > MAX_ID_CHARS:
        return None
    parts = text.split(",")
    if len(parts) > MAX_ID_ORIGINS:
        return None
    position: dict[str, int] = {}
    for part in parts:
        origin, sep, seq = part.partition(":")
        if (
            not sep
            or not ORIGIN_RE.fullmatch(origin)
            or not seq.isdigit()
            or not seq.isascii()
            or len(seq) > MAX_SEQ_DIGITS
            or origin in position
        ):
            return None
        position[origin] = int(seq)
    return position


def merge(cursor: str, ahead: Mapping[str, int]) -> str:
    """`cursor` with the origins in `ahead` raised to at least their value there."""
    position = decode(cursor) or {}
    for origin, seq in ahead.items():
        if seq > position.get(origin, -1):
            position[origin] = seq
    return encode(position)


class Origins:
    def __init__(self, local: str) -> None:
        self.local = local
        self.heads: dict[str, int] = {local: 0}
        self.floors: dict[str, int] = {local: 1}
        self._heard: dict[str, float] = {local: time.monotonic()}
        self.retired: OrderedDict[str, int] = OrderedDict()
        self.gaps = 0  # relay gaps seen (events another replica sent that never arrived)
        self._others: str | None = ""  # the other origins' part of the cursor, rebuilt when one of them moves
        self.started_ms = int(time.time() * 1000)
        self._younger: set[str] = set()  # origins not seen yet that started after this process (see `started`)

    def cursor(self, before: tuple[str, int] | None = None) -> str:
        """The position after everything seen; `before=(origin, seq)`: short of that one event."""
        if before is not None:
            return encode({**self.heads, before[0]: before[1] - 1})
        if self._others is None:
            self._others = "".join(f",{o}:{seq}" for o, seq in self.heads.items() if o != self.local)
        return f"{self.local}:{self.heads[self.local]}{self._others}"

    def next_local(self) -> int:
        seq = self.heads[self.local] + 1
        self.heads[self.local] = seq
        return seq

    def started(self, origin: str, since_ms: int) -> None:
        """When another origin's process started (its relay batches say). One that started after this process,
        beyond clock differences, has had all its events relayed while this replica listened: if its first
        event seen here is not its number 1, the ones before were lost on the way."""
        if origin not in self.heads and origin not in self.retired and since_ms > self.started_ms + CLOCK_SLACK_MS:
            self._younger.add(origin)

    def _first_sight(self, origin: str) -> int | None:
        """The number up to which an origin seen for the first time (or again) should have reached this replica,
        or None when it may have sent events before this replica listened."""
        if origin in self._younger:
            self._younger.discard(origin)
            return 0
        return self.retired.pop(origin, None)

    def _file(self, origin: str, head: int, floor: int) -> None:
        self.heads[origin], self.floors[origin] = head, floor
        self._others = None

    def arrive(self, origin: str, seq: int | None) -> tuple[int | None, bool]:
        """A relayed event's number: (the number to file it under or None to drop it as already had, gap seen)."""
        self._heard[origin] = time.monotonic()
        head = self.heads.get(origin)
        if head is None:
            expected = self._first_sight(origin)
            if seq is None:
                seq = (expected or 0) + 1
            elif expected is not None and seq <= expected:
                if expected:
                    self.retired[origin] = expected
                return None, False
            self._file(origin, seq, seq)  # first sight: nothing earlier is held here
            gap = expected is not None and seq > expected + 1
            self.gaps += gap
            return seq, gap
        if seq is None:
            seq = head + 1
        if seq <= head:
            return None, False
        gap = seq > head + 1
        self.gaps += gap
        self._file(origin, seq, seq if gap else self.floors[origin])
        return seq, gap

    def heartbeat(self, origin: str, last: int) -> bool:
        """Another replica's periodic word of its last number: True when events up to it never arrived here."""
        self._heard[origin] = time.monotonic()
        head = self.heads.get(origin)
        if head is None:
            expected = self._first_sight(origin)
            self._file(origin, last, last + 1)
            gap = expected is not None and last > expected
        else:
            gap = last > head
            if gap:
                self._file(origin, last, last + 1)
        self.gaps += gap
        return gap

    def evicted(self, origin: str, seq: int) -> None:
        """The replay buffer let go of this event."""
        if origin in self.floors and self.floors[origin] <= seq:
            self.floors[origin] = seq + 1

    def retire_quiet(self) -> list[str]:
        """Retire the origins silent for RETIRE_AFTER_S whose events have all left the buffer."""
        cutoff = time.monotonic() - RETIRE_AFTER_S
        gone = [
            o
            for o, heard in self._heard.items()
            if o != self.local and heard < cutoff and self.floors[o] > self.heads[o]
        ]
        for origin in gone:
            self.retired[origin] = self.heads.pop(origin)
            self._others = None
            del self.floors[origin], self._heard[origin]
            while len(self.retired) > MAX_RETIRED:
                self.retired.popitem(last=False)
        return gone

    def problem(self, position: Mapping[str, int]) -> str | None:
        """Why a stream cannot resume exactly at `position` here (None: it can, from the buffer)."""
        for origin, seen in position.items():
            head = self.heads.get(origin)
            if head is not None:
                if seen < head and seen + 1 < self.floors[origin]:
                    return EXPIRED
            elif origin in self.retired:
                if seen < self.retired[origin]:
                    return EXPIRED
            else:
                return UNKNOWN
        for origin, head in self.heads.items():
            # Not named: the client's replica had heard nothing from it, so every one of its events is missed.
            if origin not in position and head > 0 and self.floors[origin] > 1:
                return EXPIRED
        return None

    def ahead(self, position: Mapping[str, int]) -> dict[str, int]:
        """The origins where the client has had more than this replica yet (relayed events still on their way)."""
        return {o: seen for o, seen in position.items() if o in self.heads and seen > self.heads[o]}
