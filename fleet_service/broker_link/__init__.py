"""The service's link to the broker: an MQTT connection, or the embedded broker."""

from fleet_service.broker_link.base import BrokerLink, BrokerUnavailable, ConnectHook, Publish

__all__ = ["BrokerLink", "BrokerUnavailable", "ConnectHook", "Publish"]
