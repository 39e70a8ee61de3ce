"""What a caller sees of each kind of FleetError (fleet_service/errors.py): the nearest class in the MRO decides."""

from __future__ import annotations

from fleet_service.errors import (
    Conflict,
    FleetError,
    Forbidden,
    Invalid,
    NotFound,
    PreconditionFailed,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    UpstreamFailed,
    UpstreamTimeout,
)

__all__ = ["ERROR_STATUS", "status_of"]

ERROR_STATUS: dict[type[FleetError], int] = {
    NotFound: 404,
    Conflict: 409,
    PreconditionFailed: 412,
    Invalid: 422,
    Unauthorized: 401,
    Forbidden: 403,
    TooManyRequests: 429,
    UpstreamFailed: 502,
    UpstreamTimeout: 504,
    Unavailable: 503,
}


def status_of(exc: FleetError) -> int | None:
    """The HTTP status of `exc`; None for a FleetError of no known kind (a bug: let it be a 500)."""
    return next((ERROR_STATUS[k] for k in type(exc).__mro__ if k in ERROR_STATUS), None)
