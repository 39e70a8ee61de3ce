"""Embedded MQTT broker: amqtt with our fixes, device authentication and the per-unit topic ACL.

In-process use (inside a running event loop)::

    settings = load_settings(mqtt_port=0, database_url=url, service_secret=secret)
    broker = EmbeddedBroker(settings, SqlCredentialStore(settings.database_url, settings.service_password))
    await broker.start()            # broker.port is the bound port
    ...                             # connect as protocol.ids.SERVICE_USERNAME / secret to 127.0.0.1:broker.port
    broker.add_consumer(consume)    # await consume(topic, payload, qos, retain) for every routed message
    await broker.publish(topic, payload, qos=1, retain=True)  # as the service account, no MQTT connection
    broker.forget(device_id)        # after a secret rotation
    await broker.revoke(device_id)  # after a deletion: forget + close its live connection
    await broker.stop()
"""

from importlib import import_module
from typing import Any

# Loaded on first use, so `fleet agent` (whose CLI imports broker.cli) never pays for amqtt and SQLAlchemy.
_EXPORTS = {
    "BrokerError": "broker.errors",
    "BrokerSettings": "broker.config",
    "CredentialStore": "broker.credentials",
    "EmbeddedBroker": "broker.server",
    "Principal": "broker.credentials",
    "SqlCredentialStore": "broker.credentials",
    "StaticCredentialStore": "broker.credentials",
    "load_settings": "broker.config",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'broker' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)


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
