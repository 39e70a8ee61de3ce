"""Moves the outbox to the broker in order, a few QoS-1 publishes in flight, deleting only what was acked."""

from __future__ import annotations

import json
import logging
import queue
import threading
from dataclasses import dataclass

from agent.connection import Connection
from agent.outbox import Outbox

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 8
MAX_BATCH_BYTES = 192 * 1024  # well under protocol.payloads.MAX_PAYLOAD_BYTES


@dataclass(frozen=True)
class _InFlight:
    kind: str  # "logs" or "message"
    first: int
    last: int
    dropped: int = 0


class OutboxSender:
    """Publishes pending logs and messages while connected; paho itself resends what is in flight on reconnect."""

    def __init__(self, outbox: Outbox, connection: Connection, logs_topic: str, batch_records: int) -> None:
        self.outbox = outbox
        self.connection = connection
        self.logs_topic = logs_topic
        self.batch_records = batch_records
        self._acks: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._in_flight: dict[int, _InFlight] = {}
        self._log_cursor = 0
        self._msg_cursor = 0
        self._dropped_in_flight = 0
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

    def on_published(self, mid: int) -> None:
        """paho callback (network thread): only queue the mid; the disk work happens on our thread."""
        self._acks.put(mid)
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(30.0)
            self._wake.clear()
            try:
                self._drain_acks()
                while self._may_send() and self._send_next():
                    self._drain_acks()
            except Exception:  # a disk or encoding error must not end delivery for good
                log.exception("outbox delivery failed; retrying")
                self._stopping.wait(1.0)
                self._wake.set()

    def _may_send(self) -> bool:
        return not self._stopping.is_set() and self.connection.connected and len(self._in_flight) < MAX_IN_FLIGHT

    def _drain_acks(self) -> None:
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                return
            entry = self._in_flight.pop(mid, None)
            if entry is None:
                continue  # the birth and other direct publishes
            if entry.kind == "logs":
                self.outbox.ack_logs(entry.first, entry.last, entry.dropped)
                self._dropped_in_flight -= entry.dropped
            else:
                self.outbox.ack_message(entry.first)

    def _send_next(self) -> bool:
        messages = self.outbox.next_messages(self._msg_cursor, 1)
        if messages:
            m = messages[0]
            mid = self.connection.publish(m.topic, m.payload, qos=1, retain=m.retain)
            if mid is None:
                return False
            self._in_flight[mid] = _InFlight("message", m.seq, m.seq)
            self._msg_cursor = m.seq
            return True
        pending = self.outbox.next_logs(self._log_cursor, self.batch_records, MAX_BATCH_BYTES)
        if pending is None:
            return False
        dropped = max(0, self.outbox.dropped - self._dropped_in_flight)
        body = {"v": 1, "records": pending.records, "dropped": dropped}
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        mid = self.connection.publish(self.logs_topic, payload, qos=1)
        if mid is None:
            return False
        self._in_flight[mid] = _InFlight("logs", pending.first_seq, pending.last_seq, dropped)
        self._dropped_in_flight += dropped
        self._log_cursor = pending.last_seq
        return True
