"""Embedded MQTT broker: amqtt with our fixes, device authentication and the per-unit topic ACL.

In-process use (inside a running event loop)::

    settings = load_settings(mqtt_port=0, database_url=url, service_secret=secret)
    broker = EmbeddedBroker(settings, SqlCredentialStore(settings.database_url, settings.service_password))
    await broker.start()            # broker.port is the bound port
    ...                             # connect as protocol.ids.SERVICE_USERNAME / secret to 127.0.0.1:broker.port
    broker.forget(device_id)        # after a secret rotation
    await broker.revoke(device_id)  # after a deletion: forget + close its live connection
    await broker.stop()
"""

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
