"""Exceptions of the protocol package.

ProtocolError
  raised for any id, topic or payload that breaks the wire contract.
"""


class ProtocolError(ValueError):
    """A value breaks the wire contract; the message says how."""
