"""Embedded MQTT broker: amqtt with our fixes, device authentication and the per-unit topic ACL."""

from broker.config import BrokerSettings, load_settings
from broker.credentials import CredentialStore, Principal, SqlCredentialStore, StaticCredentialStore
from broker.errors import BrokerError
from broker.server import EmbeddedBroker

__all__ = [
    "BrokerError",
    "BrokerSettings",
    "CredentialStore",
    "EmbeddedBroker",
    "Principal",
    "SqlCredentialStore",
    "StaticCredentialStore",
    "load_settings",
]
