"""Wire contract shared by every part: ids, topics, payloads, secrets. No I/O."""

from protocol.errors import ProtocolError

__all__ = ["ProtocolError"]
