"""Binary frames of a remote session (a terminal, or a forwarded TCP stream) on `fleet/{id}/term/{sid}/...`.

Every frame is `type (u8) | seq (u32, big-endian) | body`. `seq` counts the frames one side sent in one session,
from 0: the receiver drops a repeat (QoS 1 may deliver one twice) and ends the session on a gap (a frame was lost).

Flow control is by credit, in bytes of DATA bodies: each side announces a window (OPEN for the unit's output,
ACCEPT for the operator's input) and then grants with CREDIT the absolute number of bytes the other side may have
sent in total. A sender never sends past the last limit it was granted, so no more than a window of a session's
data is ever in flight between two parties, whatever the rate of the program or the reader.

Bodies:
  OPEN    kind u8, cols u16, rows u16, window u32, who (u8 length + UTF-8), target (u16 length + UTF-8: a command
          for a terminal, empty for the login shell; the port number in decimal for a TCP stream), term (u8 length +
          ASCII)
  ACCEPT  window u32, user (u8 length + UTF-8: the user a terminal runs as; the address a TCP stream reached)
  DATA    1..MAX_DATA bytes
  RESIZE  cols u16, rows u16
  CREDIT  limit u64 (also sent now and then with an unchanged limit: a keepalive)
  CLOSE   reason u8, exit status i16 (-1: none), message (u16 length + UTF-8)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from protocol.errors import ProtocolError

__all__ = [
    "KEEPALIVE_S",
    "MAX_DATA",
    "MAX_FRAME",
    "PEER_TIMEOUT_S",
    "Accept",
    "Close",
    "CloseReason",
    "Credit",
    "Data",
    "Frame",
    "FrameType",
    "Open",
    "Resize",
    "SessionKind",
    "TerminalFrameError",
    "decode_frame",
    "encode_frame",
    "tcp_port",
]

MAX_DATA = 16 * 1024  # bytes of one DATA frame
MAX_WHO = 200
MAX_TARGET = 4096
MAX_TERM = 64
MAX_MESSAGE = 1000
MAX_SEQ = 2**32 - 1
MAX_LIMIT = 2**63 - 1
MAX_WINDOW = 16 * 1024 * 1024
MIN_WINDOW = MAX_DATA
MAX_SIZE = 10_000  # columns or rows
KEEPALIVE_S = 20.0  # each side sends a frame (a CREDIT with its current limit) when it sent nothing for this long
PEER_TIMEOUT_S = 75.0  # ... and ends the session when it heard nothing from the other side for this long
_HEADER = struct.Struct(">BI")
MAX_FRAME = _HEADER.size + 2 + 2 + 2 + 4 + 1 + MAX_WHO * 4 + 2 + MAX_TARGET * 4 + 1 + MAX_TERM  # the largest (OPEN)


class TerminalFrameError(ProtocolError):
    """Bytes that are not a valid session frame; the message says what is wrong."""


class FrameType(IntEnum):
    OPEN = 1
    ACCEPT = 2
    DATA = 3
    RESIZE = 4
    CREDIT = 5
    CLOSE = 6


class SessionKind(IntEnum):
    PTY = 1
    TCP = 2  # a forwarded TCP stream to 127.0.0.1:port on the unit (the port is OPEN's target)


class CloseReason(IntEnum):
    EXITED = 0  # the program ended; the exit status says how
    OPERATOR = 1  # the operator closed the session
    IDLE = 2  # no input for the idle timeout
    MAX_DURATION = 3  # the session reached its maximum length
    AGENT_STOPPING = 4
    DISABLED = 5  # refused: remote shell is off on this unit
    LIMIT = 6  # refused: the unit has as many sessions as it allows
    NO_USER = 7  # refused: the configured user cannot be used
    ERROR = 8  # a protocol error, a lost frame, an exceeded window, a failure to start
    TIMEOUT = 9  # the other side stopped answering
    UNSUPPORTED = 10  # refused: a kind of session this unit does not offer
    UNIT_OFFLINE = 11
    SERVICE_STOPPING = 12
    NOT_ALLOWED = 13  # refused: the unit does not allow forwarding this port
    CONNECT_FAILED = 14  # refused: nothing accepted the connection on the unit's loopback port


@dataclass(frozen=True)
class Open:
    kind: SessionKind
    cols: int
    rows: int
    window: int
    who: str
    target: str = ""
    term: str = "xterm-256color"


@dataclass(frozen=True)
class Accept:
    window: int
    user: str


@dataclass(frozen=True)
class Data:
    data: bytes


@dataclass(frozen=True)
class Resize:
    cols: int
    rows: int


@dataclass(frozen=True)
class Credit:
    limit: int


@dataclass(frozen=True)
class Close:
    reason: CloseReason
    status: int | None = None
    message: str = ""


Body = Open | Accept | Data | Resize | Credit | Close


@dataclass(frozen=True)
class Frame:
    seq: int
    body: Body

    @property
    def type(self) -> FrameType:
        return _TYPE_OF[type(self.body)]


_TYPE_OF: dict[type, FrameType] = {
    Open: FrameType.OPEN,
    Accept: FrameType.ACCEPT,
    Data: FrameType.DATA,
    Resize: FrameType.RESIZE,
    Credit: FrameType.CREDIT,
    Close: FrameType.CLOSE,
}


# Encoding ---------------------------------------------------------------------------------------------------------


def encode_frame(frame: Frame) -> bytes:
    """The frame's bytes; TerminalFrameError when a field is out of its bounds (nothing invalid is ever sent)."""
    if not 0 <= frame.seq <= MAX_SEQ:
        raise TerminalFrameError(f"seq {frame.seq} is outside 0..{MAX_SEQ}")
    return _HEADER.pack(frame.type, frame.seq) + _encode_body(frame.body)


def _encode_body(body: Body) -> bytes:
    if isinstance(body, Data):
        if not 1 <= len(body.data) <= MAX_DATA:
            raise TerminalFrameError(f"a DATA frame carries 1..{MAX_DATA} bytes, not {len(body.data)}")
        return bytes(body.data)
    if isinstance(body, Credit):
        _check_range("limit", body.limit, 0, MAX_LIMIT)
        return struct.pack(">Q", body.limit)
    if isinstance(body, Resize):
        _check_size(body.cols, body.rows)
        return struct.pack(">HH", body.cols, body.rows)
    if isinstance(body, Open):
        _check_size(body.cols, body.rows)
        _check_range("window", body.window, MIN_WINDOW, MAX_WINDOW)
        if not body.term.isascii() or not body.term.isprintable():
            raise TerminalFrameError("term must be printable ASCII")
        return (
            struct.pack(">BHHI", SessionKind(body.kind), body.cols, body.rows, body.window)
            + _text(body.who, "who", MAX_WHO, 1)
            + _text(body.target, "target", MAX_TARGET, 2)
            + _text(body.term, "term", MAX_TERM, 1)
        )
    if isinstance(body, Accept):
        _check_range("window", body.window, MIN_WINDOW, MAX_WINDOW)
        return struct.pack(">I", body.window) + _text(body.user, "user", MAX_WHO, 1)
    if isinstance(body, Close):
        status = -1 if body.status is None else body.status
        _check_range("exit status", status, -1, 255)
        return struct.pack(">Bh", CloseReason(body.reason), status) + _text(body.message, "message", MAX_MESSAGE, 2)
    raise TerminalFrameError(f"not a frame body: {type(body).__name__}")


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise TerminalFrameError(f"{name} {value!r} is outside {low}..{high}")


def _check_size(cols: int, rows: int) -> None:
    _check_range("cols", cols, 1, MAX_SIZE)
    _check_range("rows", rows, 1, MAX_SIZE)


def _text(value: str, name: str, limit: int, width: int) -> bytes:
    data = value.encode("utf-8")
    if len(value) > limit or len(data) >= 256**width:
        raise TerminalFrameError(f"{name} is longer than {limit} characters")
    return len(data).to_bytes(width, "big") + data


# Decoding ---------------------------------------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.at = 0
        self.what = what

    def take(self, n: int, field: str) -> bytes:
        if self.at + n > len(self.data):
            raise TerminalFrameError(f"{self.what} frame ends inside its {field}")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def unpack(self, fmt: str, field: str) -> tuple[int, ...]:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), field))

    def text(self, field: str, width: int, limit: int) -> str:
        size = int.from_bytes(self.take(width, f"{field} length"), "big")
        raw = self.take(size, field)
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise TerminalFrameError(f"{self.what} frame's {field} is not UTF-8") from None
        if len(value) > limit:
            raise TerminalFrameError(f"{self.what} frame's {field} is longer than {limit} characters")
        return value

    def end(self) -> None:
        if self.at != len(self.data):
            raise TerminalFrameError(f"{self.what} frame has {len(self.data) - self.at} bytes after its last field")


def decode_frame(data: bytes) -> Frame:
    """Parse one frame; TerminalFrameError (a ProtocolError) saying what is wrong for anything else."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TerminalFrameError(f"a frame is bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise TerminalFrameError(f"a frame has at least {_HEADER.size} bytes, got {len(data)}")
    if len(data) > MAX_FRAME:
        raise TerminalFrameError(f"a frame has at most {MAX_FRAME} bytes, got {len(data)}")
    code, seq = _HEADER.unpack_from(data)
    try:
        kind = FrameType(code)
    except ValueError:
        raise TerminalFrameError(f"unknown frame type {code}") from None
    reader = _Reader(data[_HEADER.size :], kind.name)
    body = _decode_body(kind, reader)
    reader.end()
    return Frame(seq, body)


def _decode_body(kind: FrameType, r: _Reader) -> Body:
    body: Body
    if kind is FrameType.DATA:
        if not 1 <= len(r.data) <= MAX_DATA:
            raise TerminalFrameError(f"a DATA frame carries 1..{MAX_DATA} bytes, not {len(r.data)}")
        r.at = len(r.data)
        return Data(r.data)
    if kind is FrameType.CREDIT:
        (limit,) = r.unpack(">Q", "limit")
        body = Credit(limit)
    elif kind is FrameType.RESIZE:
        cols, rows = r.unpack(">HH", "size")
        body = Resize(cols, rows)
    elif kind is FrameType.OPEN:
        code, cols, rows, window = r.unpack(">BHHI", "fixed fields")
        try:
            session_kind = SessionKind(code)
        except ValueError:
            raise TerminalFrameError(f"OPEN frame names unknown session kind {code}") from None
        who = r.text("who", 1, MAX_WHO)
        target = r.text("target", 2, MAX_TARGET)
        term = r.text("term", 1, MAX_TERM)
        body = Open(session_kind, cols, rows, window, who, target, term)
    elif kind is FrameType.ACCEPT:
        (window,) = r.unpack(">I", "window")
        body = Accept(window, r.text("user", 1, MAX_WHO))
    else:
        code, status = r.unpack(">Bh", "reason")
        try:
            reason = CloseReason(code)
        except ValueError:
            raise TerminalFrameError(f"CLOSE frame names unknown reason {code}") from None
        body = Close(reason, None if status == -1 else status, r.text("message", 2, MAX_MESSAGE))
    try:
        _encode_body(body)  # the same bounds as for sending
    except TerminalFrameError as exc:
        raise TerminalFrameError(f"{kind.name} frame: {exc}") from None
    return body


def tcp_port(request: Open) -> int | None:
    """The loopback port a TCP OPEN asks for, or None when its target is not a port number (1..65535)."""
    target = request.target
    if not (target.isascii() and target.isdigit()) or len(target) > 5:
        return None
    port = int(target)
    return port if 1 <= port <= 65535 else None
