"""Remote session frames (protocol/terminal.py): every valid frame survives encode -> decode, and any other bytes
raise a TerminalFrameError (a ProtocolError) that says what is wrong, never another exception."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import ProtocolError
from protocol.terminal import (
    MAX_DATA,
    MAX_FRAME,
    MAX_LIMIT,
    MAX_SEQ,
    MAX_WINDOW,
    MIN_WINDOW,
    Accept,
    Close,
    CloseReason,
    Credit,
    Data,
    Frame,
    Open,
    Resize,
    SessionKind,
    TerminalFrameError,
    decode_frame,
    encode_frame,
)
from protocol.topics import parse_term, term_down_filter, term_topic, unit_may_publish, unit_may_subscribe

sizes = st.integers(1, 10_000)
windows = st.integers(MIN_WINDOW, MAX_WINDOW)
text = st.text(max_size=50)
bodies = st.one_of(
    st.builds(
        Open,
        st.sampled_from(SessionKind),
        sizes,
        sizes,
        windows,
        text,
        st.text(max_size=300),
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=64),
    ),
    st.builds(Accept, windows, text),
    st.builds(Data, st.binary(min_size=1, max_size=MAX_DATA)),
    st.builds(Resize, sizes, sizes),
    st.builds(Credit, st.integers(0, MAX_LIMIT)),
    st.builds(Close, st.sampled_from(CloseReason), st.none() | st.integers(0, 255), st.text(max_size=200)),
)
frames = st.builds(Frame, st.integers(0, MAX_SEQ), bodies)


@given(frames)
@settings(max_examples=400)
def test_every_frame_survives_a_round_trip(frame):
    data = encode_frame(frame)
    assert len(data) <= MAX_FRAME
    assert decode_frame(data) == frame


@given(st.binary(max_size=600))
@settings(max_examples=2000)
def test_garbage_raises_a_frame_error_or_is_a_valid_frame(data):
    try:
        frame = decode_frame(data)
    except TerminalFrameError as exc:
        assert str(exc)  # says what is wrong
        assert isinstance(exc, ProtocolError)
    else:
        assert encode_frame(frame) == data  # what decodes is exactly one frame's bytes


@given(frames, st.data())
@settings(max_examples=300)
def test_a_cut_or_extended_frame_is_refused(frame, data):
    encoded = encode_frame(frame)
    if not isinstance(frame.body, Data):  # a DATA body is every byte after the header: a cut one is still data
        cut = data.draw(st.integers(0, len(encoded) - 1))
        with pytest.raises(TerminalFrameError):
            decode_frame(encoded[:cut])
        with pytest.raises(TerminalFrameError, match="after its last field"):
            decode_frame(encoded + b"\0")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "at least 5 bytes"),
        (b"\x09\0\0\0\0", "unknown frame type 9"),
        (b"\x03\0\0\0\1", r"DATA frame carries 1\.\.16384 bytes, not 0"),
        (b"\x03\0\0\0\1" + b"x" * (MAX_DATA + 1), "carries 1..16384 bytes"),
        (b"\x05\0\0\0\0\0\0", "CREDIT frame ends inside its limit"),
        (b"\x04\0\0\0\0\0\0\0\x18", "cols 0 is outside 1..10000"),
        (b"\x06\0\0\0\0\x63\xff\xff\0\0", "unknown reason 99"),
        (b"\x06\0\0\0\0\0\x01\x00\0\0", "exit status 256"),
        (b"\x01\0\0\0\0\x07\0\x50\0\x18\0\1\0\0\0\0\0", "unknown session kind 7"),
        (b"\x01\0\0\0\0\x01\0\x50\0\x18\0\0\0\1\0\0\0\0", "window 1 is outside"),
        (b"\x02\0\0\0\0\0\1\0\0\2\xff\xfe", "user is not UTF-8"),
        (b"\x01" + b"\0" * (MAX_FRAME + 1), "at most"),
    ],
)
def test_bad_frames_name_what_is_wrong(data, message):
    with pytest.raises(TerminalFrameError, match=message):
        decode_frame(data)


def test_out_of_bounds_fields_are_never_encoded():
    with pytest.raises(TerminalFrameError, match="seq"):
        encode_frame(Frame(MAX_SEQ + 1, Credit(0)))
    with pytest.raises(TerminalFrameError, match="window"):
        encode_frame(Frame(0, Accept(10, "pi")))
    with pytest.raises(TerminalFrameError, match="1..16384 bytes"):
        encode_frame(Frame(0, Data(b"")))
    with pytest.raises(TerminalFrameError, match="who is longer"):
        encode_frame(Frame(0, Open(SessionKind.PTY, 80, 24, MIN_WINDOW, "x" * 201)))
    with pytest.raises(TerminalFrameError, match="term must be printable ASCII"):
        encode_frame(Frame(0, Open(SessionKind.PTY, 80, 24, MIN_WINDOW, "op", term="\n")))
    assert struct.unpack(">h", encode_frame(Frame(0, Close(CloseReason.IDLE)))[6:8]) == (-1,)


def test_session_topics_belong_to_their_unit():
    sid = "0123456789abcdef0123456789abcdef"
    up = term_topic("u1", sid, "up")
    assert up == f"fleet/u1/term/{sid}/up"
    assert parse_term(up) is not None and parse_term(up).session == sid
    assert parse_term("fleet/u1/term/nothex/up") is None and parse_term("fleet/u1/cmd") is None
    with pytest.raises(ProtocolError, match="session id"):
        term_topic("u1", "../x", "up")
    assert unit_may_publish("u1", up) and not unit_may_publish("u2", up)
    assert not unit_may_publish("u1", term_topic("u1", sid, "down"))
    assert unit_may_subscribe("u1", term_down_filter("u1"))
    assert not unit_may_subscribe("u1", term_down_filter("u2"))
    assert not unit_may_subscribe("u1", term_topic("u1", sid, "down"))


def test_a_tcp_open_names_its_port_and_the_new_refusals_round_trip():
    from protocol.terminal import Close, CloseReason, Frame, Open, SessionKind, decode_frame, encode_frame, tcp_port

    opening = Open(SessionKind.TCP, 1, 1, 64 * 1024, "token:ops", "8080", "tcp")
    decoded = decode_frame(encode_frame(Frame(0, opening))).body
    assert decoded == opening and tcp_port(decoded) == 8080
    for target in ("", "0", "65536", "80a", "-1", "٣"):
        assert tcp_port(Open(SessionKind.TCP, 1, 1, 64 * 1024, "x", target)) is None, target
    for reason in (CloseReason.NOT_ALLOWED, CloseReason.CONNECT_FAILED):
        close = Close(reason, None, "port 9 is not allowed")
        assert decode_frame(encode_frame(Frame(3, close))).body == close
