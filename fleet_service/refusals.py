"""The service's WebSocket close codes, and the refusals that carry one.

A socket (terminal, port forward, relay, the proxy's WebSocket) that cannot start, or that ends for a reason the
client should know, is closed with 4000 + the HTTP status of the same answer (4404: no such unit), so clients
(the dashboard, `fleet shell`, `fleet forward`) read both the same way. A refusal is raised as `refused(code,
message)`: a `Refused` that is also the FleetError of its kind, so a WebSocket route closes with `.code` and an
HTTP route (the proxy) lets it propagate to the one FleetError handler, which answers by the kind.
"""

from __future__ import annotations

from fleet_service.errors import (
    Conflict,
    FleetError,
    Forbidden,
    Invalid,
    NotFound,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
    UpstreamFailed,
    UpstreamTimeout,
)
from protocol.terminal import CloseReason

CLOSE_NORMAL = 1000
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_UNKNOWN_UNIT = 4404
CLOSE_UNIT_OFFLINE = 4409
CLOSE_DISABLED = 4410  # the unit's config turned this off
CLOSE_TOO_LARGE = 4413
CLOSE_REFUSED = 4422  # the unit refused the session
CLOSE_LIMIT = 4429
CLOSE_CONNECT_FAILED = 4502  # nothing accepted the connection on the unit's loopback port
CLOSE_BROKER_DOWN = 4503
CLOSE_NO_ANSWER = 4504

# How a remote session the unit closed (or refused) ends the client's socket.
CODE_OF = {
    CloseReason.DISABLED: CLOSE_DISABLED,
    CloseReason.NOT_ALLOWED: CLOSE_FORBIDDEN,
    CloseReason.LIMIT: CLOSE_LIMIT,
    CloseReason.NO_USER: CLOSE_REFUSED,
    CloseReason.UNSUPPORTED: CLOSE_REFUSED,
    CloseReason.CONNECT_FAILED: CLOSE_CONNECT_FAILED,
    CloseReason.AGENT_STOPPING: CLOSE_UNIT_OFFLINE,
    CloseReason.UNIT_OFFLINE: CLOSE_UNIT_OFFLINE,
    CloseReason.TIMEOUT: CLOSE_NO_ANSWER,
}


class Refused(FleetError):
    """A socket or proxied request that cannot start: `code` is its close code, the message says why."""

    def __init__(self, code: int, message: str) -> None:
        Exception.__init__(self, message)  # not the kind's own constructor: the kind only decides the HTTP answer
        self.code = code


class _RefusedInvalid(Refused, Invalid):
    pass


class _RefusedUnauthenticated(Refused, Unauthenticated):
    pass


class _RefusedForbidden(Refused, Forbidden):
    pass


class _RefusedNotFound(Refused, NotFound):
    pass


class _RefusedConflict(Refused, Conflict):
    pass


class _RefusedTooMany(Refused, TooManyRequests):
    retry_after = 1


class _RefusedUnavailable(Refused, Unavailable):
    pass


class _RefusedTimeout(Refused, UpstreamTimeout):
    pass


class _RefusedUpstream(Refused, UpstreamFailed):
    pass


_KIND_OF: dict[int, type[Refused]] = {
    CLOSE_BAD_REQUEST: _RefusedInvalid,
    CLOSE_UNAUTHENTICATED: _RefusedUnauthenticated,
    CLOSE_FORBIDDEN: _RefusedForbidden,
    CLOSE_DISABLED: _RefusedForbidden,
    CLOSE_UNKNOWN_UNIT: _RefusedNotFound,
    CLOSE_UNIT_OFFLINE: _RefusedConflict,
    CLOSE_LIMIT: _RefusedTooMany,
    CLOSE_BROKER_DOWN: _RefusedUnavailable,
    CLOSE_NO_ANSWER: _RefusedTimeout,
}


def refused(code: int, message: str) -> Refused:
    """The refusal with this close code; any code not listed (the unit refused, or could not connect) is an
    UpstreamFailed."""
    return _KIND_OF.get(code, _RefusedUpstream)(code, message)
