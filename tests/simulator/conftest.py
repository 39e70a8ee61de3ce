"""Simulated units against the real service: the same running fleets as the service tests."""

from tests.fleet_service.conftest import fleet  # noqa: F401
