"""The service's errors, one tree, so the API answers each kind the same way wherever it is raised.

    FleetError                  anything the service refuses or cannot do, with a message a caller may read
    ├── NotFound (LookupError)  no such unit, command, rollout, user, ...                          -> 404
    ├── Conflict                the thing exists, but its state does not allow this               -> 409
    │   └── PreconditionFailed  If-Match named another version than the stored one                -> 412
    ├── Invalid (ValueError)    the request is well-formed but its content is refused             -> 422
    ├── Unauthorized            a credential offered for this action is refused                   -> 401
    │   └── Unauthenticated     no valid credential came with the request at all     -> 401 + WWW-Authenticate
    ├── Forbidden               the caller is known, but its role (or the unit's config) says no  -> 403
    ├── TooManyRequests         the caller is past a budget (failed logins, streams, TURN mints)  -> 429
    ├── UpstreamFailed          a service or unit we call for the caller answered with an error   -> 502
    │   └── UpstreamTimeout     ... or did not answer in time                                     -> 504
    └── Unavailable             a dependency (database, broker, Mosquitto) cannot be reached now  -> 503

`TooManyRequests` and `Unavailable` may carry `retry_after` (whole seconds), answered as `Retry-After`.

The domain errors derive from these (e.g. `CommandError(Invalid)`, `RolloutConflict(Conflict)`), so a route
raises or lets them propagate and the one handler in fleet_service/app.py turns them into `{"detail": message}`
with the status above. NotFound and Invalid keep the built-in bases code already catches them by. This module
knows nothing of HTTP: the statuses are the app's mapping, written here only to read the tree by.
"""

from __future__ import annotations

import math

__all__ = [
    "Conflict",
    "FleetError",
    "Forbidden",
    "Invalid",
    "NotFound",
    "PreconditionFailed",
    "TooManyRequests",
    "Unauthenticated",
    "Unauthorized",
    "Unavailable",
    "UpstreamFailed",
    "UpstreamTimeout",
]


class FleetError(Exception):
    """Base of every error the service reports to its callers; str(error) is the message they see."""


class NotFound(FleetError, LookupError):
    """The thing named does not exist (or no longer does)."""


class Conflict(FleetError):
    """The thing exists, but its current state does not allow the change."""


class PreconditionFailed(Conflict):
    """The caller's If-Match named another version than the stored one."""


class Invalid(FleetError, ValueError):
    """The request's content is refused; the message says what is wrong."""


class Unauthorized(FleetError):
    """A credential offered for this one action (e.g. a claim token) is refused."""


class Unauthenticated(Unauthorized):
    """The request carries no credential the service accepts (token, unit secret, session); the caller may retry
    with one (HTTP adds the Bearer challenge)."""


class Forbidden(FleetError):
    """The caller is known, but may not do this: its role is too low, or the unit's config keeps it out."""


class Unavailable(FleetError):
    """Something the service needs cannot be reached right now; `retry_after` seconds, when known."""

    retry_after: int | None = None


class TooManyRequests(FleetError):
    """The caller is past one of its budgets; it may try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = max(1, math.ceil(retry_after))


class UpstreamFailed(FleetError):
    """A service called on the caller's behalf (a TURN provider's API, a unit's server through the proxy) answered
    with an error or not at all."""


class UpstreamTimeout(UpstreamFailed):
    """What was called on the caller's behalf did not answer in time."""
