"""What every part shares: the wire contract (ids, topics, payloads, secrets) and the process heap setting. No I/O."""

from protocol.errors import ProtocolError

__all__ = ["ProtocolError"]
