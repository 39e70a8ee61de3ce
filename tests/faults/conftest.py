"""The fault suite: real processes killed, flooded, starved and fed garbage; every record counted."""

from tests.fleet_service.conftest import fleet  # noqa: F401  (the same running fleets as the service tests)
