"""Exceptions of the broker package.

BrokerError
  the embedded broker could not start or was used in the wrong state; amqtt's own
  errors are translated into it where they enter our code.
"""


class BrokerError(Exception):
    """The embedded broker failed to start or was misused; the message says why."""
