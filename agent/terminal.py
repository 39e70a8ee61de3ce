"""Remote sessions on this unit (terminals and forwarded TCP ports): which are allowed, how many, how long, and the
frames of every session.

A session starts only when the service sends OPEN on `fleet/{id}/term/{sid}/down`, and only when remote shells are
allowed here: the desired config's `remote_shell` (true or false) when it has one, else the agent's
`allow_remote_shell` (off by default). A refusal is a CLOSE frame that says why. A session ends when its program
exits, when the operator or the service closes it, after `remote_shell_idle_timeout` seconds without input, after
`remote_shell_max_duration`, when the service stops answering, when the broker connection is lost, and when the
agent stops.

A forwarded port (a TCP OPEN) reaches 127.0.0.1:PORT only, and only a port the unit allows: the desired config's
`remote_ports` when it has the key, else the agent's `allow_remote_port` (none by default).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.config import AgentSettings
from agent.port_forward import TcpSession
from agent.stream_session import StreamSession
from agent.terminal_session import PtySession
from protocol import ProtocolError
from protocol.terminal import (
    KEEPALIVE_S,
    PEER_TIMEOUT_S,
    Close,
    CloseReason,
    Credit,
    Frame,
    Open,
    SessionKind,
    decode_frame,
    encode_frame,
    tcp_port,
)
from protocol.topics import TERM_DOWN, TERM_UP, parse_term, term_down_filter, term_topic

log = logging.getLogger(__name__)

__all__ = ["TerminalHost"]

CONFIG_KEY = "remote_shell"
PORTS_KEY = "remote_ports"
_TICK_S = 0.5
_WARN_EVERY_S = 60.0


class TerminalHost:
    def __init__(self, settings: AgentSettings, publish: Callable[[str, bytes], bool]) -> None:
        """`publish(topic, payload)` sends at QoS 1 and says whether the broker connection took it."""
        self.settings = settings
        self.device_id = settings.device_id
        self._publish = publish
        self.sessions: dict[str, StreamSession] = {}
        self._lock = threading.Lock()
        self.desired: bool | None = None  # the desired config's `remote_shell`, when it has one
        self.desired_ports: frozenset[int] | None = None  # the desired config's `remote_ports`, when it has them
        self._stopping = threading.Event()
        self._ticker: threading.Thread | None = None
        self._warned: dict[str, float] = {}

    @property
    def filter(self) -> str:
        return term_down_filter(self.device_id)

    @property
    def enabled(self) -> bool:
        return self.settings.allow_remote_shell if self.desired is None else self.desired

    @property
    def ports(self) -> frozenset[int]:
        """The loopback ports that may be forwarded."""
        if self.desired_ports is not None:
            return self.desired_ports
        return frozenset(self.settings.allow_remote_port)

    def on_desired_config(self, config: dict[str, Any]) -> None:
        value = config.get(CONFIG_KEY)
        desired = value if isinstance(value, bool) else None
        if desired != self.desired:
            self.desired = desired
            log.info("remote shell %s (%s)", "allowed" if self.enabled else "off", _source(desired))
        ports = _ports(config.get(PORTS_KEY))
        if ports != self.desired_ports:
            self.desired_ports = ports
            where = "agent setting allow_remote_port" if ports is None else "desired config remote_ports"
            log.info("forwardable ports: %s (%s)", sorted(self.ports) or "none", where)

    # Lifecycle --------------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._ticker = threading.Thread(target=self._tick, name="agent-term-timer", daemon=True)
        self._ticker.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Close every session (the service hears why) and wait for their programs to end."""
        self._stopping.set()
        sessions = self._all()
        for session in sessions:
            session.end(Close(CloseReason.AGENT_STOPPING, None, "the agent on the unit is stopping"))
        for session in sessions:
            session.join_cleanup(timeout)
        if self._ticker is not None:
            self._ticker.join(timeout)

    def on_disconnected(self) -> None:
        """The broker connection is gone: frames sent meanwhile are lost, so every session ends."""
        for session in self._all():
            session.end(None)
            log.info("remote shell %s ended: lost the broker connection", session.sid[:8])

    def _all(self) -> list[StreamSession]:
        with self._lock:
            return list(self.sessions.values())

    # Frames (MQTT network thread) -------------------------------------------------------------------------------

    def on_message(self, name: str, payload: bytes) -> None:
        term = parse_term(name)
        if term is None or term.device_id != self.device_id or term.direction != TERM_DOWN:
            return
        with self._lock:
            session = self.sessions.get(term.session)
        try:
            frame = decode_frame(payload)
        except ProtocolError as exc:
            if session is not None:
                session.end(Close(CloseReason.ERROR, None, f"bad frame from the service: {exc}"))
            else:
                self._warn("bad", "ignored a bad session frame: %s", exc)
            return
        if session is not None:
            session.on_frame(frame)
        elif isinstance(frame.body, Open) and frame.seq == 0:
            self._open(term.session, frame.body)
        # Anything else belongs to a session that has ended: nothing to do.

    def _open(self, sid: str, request: Open) -> None:
        refusal = self._refusal(request)
        if refusal is not None:
            log.info("remote shell for %s refused: %s", request.who, refusal.message)
            self._send_once(sid, refusal)
            return
        topic_up = term_topic(self.device_id, sid, TERM_UP)
        session: StreamSession
        if request.kind is SessionKind.TCP:
            port = tcp_port(request)
            assert port is not None  # checked by _refusal
            session = TcpSession(sid, request, port, lambda data: self._publish(topic_up, data), self._forget)
        else:
            session = PtySession(
                sid,
                request,
                lambda data: self._publish(topic_up, data),
                remote_user=self.settings.remote_user,
                shell_command=self.settings.remote_shell_command,
                on_end=self._forget,
            )
        with self._lock:
            self.sessions[sid] = session
        threading.Thread(target=session.start, name="agent-term", daemon=True).start()

    def _refusal(self, request: Open) -> Close | None:
        if self._stopping.is_set():
            return Close(CloseReason.AGENT_STOPPING, None, "the agent on the unit is stopping")
        if request.kind is SessionKind.TCP:
            return self._tcp_refusal(request)
        if not self.enabled:
            how = "the unit's config sets remote_shell: false" if self.desired is False else "allow_remote_shell is off"
            return Close(CloseReason.DISABLED, None, f"remote shell is disabled on this unit ({how})")
        if request.kind is not SessionKind.PTY:
            return Close(CloseReason.UNSUPPORTED, None, f"this unit does not offer {request.kind.name} sessions")
        limit = self.settings.remote_shell_max_sessions
        with self._lock:
            if sum(isinstance(s, PtySession) for s in self.sessions.values()) >= limit:
                return Close(CloseReason.LIMIT, None, f"this unit allows at most {limit} remote shells at a time")
        return None

    def _tcp_refusal(self, request: Open) -> Close | None:
        port = tcp_port(request)
        if port is None:
            return Close(CloseReason.ERROR, None, f"{request.target!r} is not a port number (1..65535)")
        allowed = self.ports
        if not allowed:
            how = "its config sets remote_ports: []" if self.desired_ports is not None else "no allow_remote_port"
            return Close(CloseReason.DISABLED, None, f"port forwarding is disabled on this unit ({how})")
        if port not in allowed:
            where = "remote_ports" if self.desired_ports is not None else "allow_remote_port"
            listed = ", ".join(str(p) for p in sorted(allowed))
            return Close(CloseReason.NOT_ALLOWED, None, f"port {port} is not allowed on this unit ({where}: {listed})")
        limit = self.settings.remote_port_max_sessions
        with self._lock:
            if sum(isinstance(s, TcpSession) for s in self.sessions.values()) >= limit:
                return Close(
                    CloseReason.LIMIT, None, f"this unit allows at most {limit} forwarded connections at a time"
                )
        return None

    def _send_once(self, sid: str, close: Close) -> None:
        self._publish(term_topic(self.device_id, sid, TERM_UP), encode_frame(Frame(0, close)))

    def _forget(self, session: StreamSession) -> None:
        with self._lock:
            if self.sessions.get(session.sid) is session:
                del self.sessions[session.sid]

    # Timers -----------------------------------------------------------------------------------------------------

    def _tick(self) -> None:
        s = self.settings
        while not self._stopping.wait(_TICK_S):
            now = time.monotonic()
            for session in self._all():
                if session.closed.is_set():
                    continue
                if now - session.last_input >= s.remote_shell_idle_timeout:
                    message = f"no input for {s.remote_shell_idle_timeout:g} s"
                    session.end(Close(CloseReason.IDLE, None, message))
                elif now - session.started >= s.remote_shell_max_duration:
                    message = f"the session reached its maximum length of {s.remote_shell_max_duration:g} s"
                    session.end(Close(CloseReason.MAX_DURATION, None, message))
                elif now - session.last_heard >= PEER_TIMEOUT_S:
                    session.end(Close(CloseReason.TIMEOUT, None, "the fleet service stopped answering"))
                elif now - session.last_sent >= KEEPALIVE_S and session.running:
                    session.send(Credit(session.in_granted))

    def _warn(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._warned.get(key, -_WARN_EVERY_S) >= _WARN_EVERY_S:
            self._warned[key] = now
            log.warning(msg, *args)


def _ports(value: Any) -> frozenset[int] | None:
    """The desired config's remote_ports: a list of port numbers (anything else: as if absent)."""
    if not isinstance(value, list):
        return None
    if not all(isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535 for p in value):
        return None
    return frozenset(value)


def _source(desired: bool | None) -> str:
    return "agent setting allow_remote_shell" if desired is None else "desired config remote_shell"
