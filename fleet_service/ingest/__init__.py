"""MQTT ingest: the broker link, batching, and persistence of what units publish."""
