"""The unit agent: presence, heartbeats, metrics, logs, commands, git updates, config apply, durable outbox.

Public API: `Agent` (agent.runner) and `AgentSettings` (agent.config). May import only protocol,
paho-mqtt, psutil, gitpython, pydantic(-settings) and the standard library.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
