"""Moves the outbox to the service in order and deletes only what the service acknowledged end to end.

Every log batch and message carries an `ack_id` naming its rows (`L<first>-<last>`, `M<seq>`); the service
echoes it on `fleet/{id}/ack` after its transaction committed. A PUBACK only means the broker has it, and a
broker restart or a crashed service can still lose it, so until the ack a message stays in the outbox and in
a bounded window of messages awaiting acks; the window is sent again after every reconnect and whenever the
oldest has waited `ack_timeout` (doubling while nothing is acknowledged, so an absent service is not flooded).
The service stores each message idempotently, so a resend never doubles anything.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from dataclasses import dataclass

from agent.connection import Connection
from agent.outbox import Outbox
from protocol.errors import ProtocolError
from protocol.payloads import Ack, decode
from protocol.topics import Kind

log = logging.getLogger(__name__)

WINDOW = 8  # messages awaiting an end-to-end ack at most
MAX_BATCH_BYTES = 192 * 1024  # well under protocol.payloads.MAX_PAYLOAD_BYTES
MAX_ACK_WAIT_S = 300.0
_ACK_ID = re.compile(r"^(?:L(\d+)-(\d+)|M(\d+))$")


@dataclass
class _Sent:
    topic: str
    payload: bytes
    retain: bool
    sent_at: float


class OutboxSender:
    """Publishes pending logs and messages while connected; resends what the service has not acknowledged."""

    def __init__(
        self, outbox: Outbox, connection: Connection, logs_topic: str, batch_records: int, ack_timeout: float = 20.0
    ) -> None:
        self.outbox = outbox
        self.connection = connection
        self.logs_topic = logs_topic
        self.batch_records = batch_records
        self.ack_timeout = ack_timeout
        self.resent = 0  # messages published again for want of an ack
        self._acks: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._unapplied: list[str] = []  # acks whose delete failed (disk trouble): retried
        self._awaiting: dict[str, _Sent] = {}  # by ack id, in send order
        self._wait = ack_timeout
        self._connects = connection.connects
        self._log_cursor = 0
        self._msg_cursor = 0
        self._wake = outbox.changed
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="agent-outbox", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    @property
    def awaiting(self) -> int:
        return len(self._awaiting)

    def on_ack(self, payload: bytes) -> None:
        """`fleet/{id}/ack` arrived (network thread): queue its ids; the disk work happens on our thread."""
        try:
            ack = decode(Kind.ACK, payload)
        except ProtocolError as exc:
            log.warning("ignoring an invalid ack: %s", exc)
            return
        assert isinstance(ack, Ack)
        for ack_id, reason in ack.rejected.items():
            log.warning("the service refused outbox message %s for good: %s", ack_id, reason)
        for ack_id in [*ack.ids, *ack.rejected]:
            self._acks.put(ack_id)
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._next_check())
            self._wake.clear()
            try:
                self._apply_acks()
                self._resend_if_due()
                while self._may_send() and self._send_next():
                    self._apply_acks()
            except Exception:  # a disk or encoding error must not end delivery for good
                log.exception("outbox delivery failed; retrying")
                self._stopping.wait(1.0)
                self._wake.set()

    def _next_check(self) -> float:
        if not self._awaiting:
            return 30.0
        oldest = next(iter(self._awaiting.values()))
        return max(0.05, min(30.0, oldest.sent_at + self._wait - time.monotonic()))

    def _may_send(self) -> bool:
        return not self._stopping.is_set() and self.connection.connected and len(self._awaiting) < WINDOW

    def _apply_acks(self) -> None:
        ids, self._unapplied = self._unapplied, []
        while True:
            try:
                ids.append(self._acks.get_nowait())
            except queue.Empty:
                break
        for position, ack_id in enumerate(ids):
            match = _ACK_ID.match(ack_id)
            if match is None:
                continue  # not ours (an older agent's, or garbage)
            try:
                if match.group(3):
                    self.outbox.ack_message(int(match.group(3)))
                else:
                    self.outbox.ack_logs(int(match.group(1)), int(match.group(2)))
            except Exception:
                self._unapplied = ids[position:]  # kept, tried again on the next pass: never left behind
                raise
            if self._awaiting.pop(ack_id, None) is not None:
                self._wait = self.ack_timeout  # the service is there: back to the normal patience

    def _resend_if_due(self) -> None:
        if not self._awaiting or not self.connection.connected:
            return
        now = time.monotonic()
        reconnected = self.connection.connects != self._connects
        oldest = next(iter(self._awaiting.values()))
        if not reconnected and now - oldest.sent_at < self._wait:
            return
        if not reconnected:
            self._wait = min(self._wait * 2, MAX_ACK_WAIT_S)
        self._connects = self.connection.connects
        for sent in self._awaiting.values():
            if self.connection.publish(sent.topic, sent.payload, qos=1, retain=sent.retain) is None:
                return
            sent.sent_at = now
            self.resent += 1
        log.info(
            "sent %d unacknowledged outbox messages again (%s)",
            len(self._awaiting),
            "reconnected" if reconnected else f"no ack within {self._wait / 2:.0f} s",
        )

    def _send_next(self) -> bool:
        self._connects = self.connection.connects  # what goes out now goes out on this connection
        messages = self.outbox.next_messages(self._msg_cursor, 1)
        if messages:
            m = messages[0]
            ack_id = f"M{m.seq}"
            if not self._publish(ack_id, m.topic, _with_ack_id(m.payload, ack_id), m.retain):
                return False
            self._msg_cursor = m.seq
            return True
        pending = self.outbox.next_logs(self._log_cursor, self.batch_records, MAX_BATCH_BYTES)
        if pending is None:
            return False
        ack_id = f"L{pending.first_seq}-{pending.last_seq}"
        body = {"v": 1, "records": pending.records, "dropped_total": self.outbox.dropped, "ack_id": ack_id}
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        if not self._publish(ack_id, self.logs_topic, payload, False):
            return False
        self._log_cursor = self.outbox.published_upto = pending.last_seq
        return True

    def _publish(self, ack_id: str, topic: str, payload: bytes, retain: bool) -> bool:
        if self.connection.publish(topic, payload, qos=1, retain=retain) is None:
            return False
        self._awaiting[ack_id] = _Sent(topic, payload, retain, time.monotonic())
        return True


def _with_ack_id(payload: bytes, ack_id: str) -> bytes:
    body = json.loads(payload)
    body["ack_id"] = ack_id
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
