"""Every table, registered on SQLModel.metadata: import this before creating or comparing the schema."""

import fleet_service.alerts.models  # noqa: F401
import fleet_service.auth.models  # noqa: F401
import fleet_service.commands.models  # noqa: F401
import fleet_service.devices.models  # noqa: F401
import fleet_service.metrics.models  # noqa: F401
import fleet_service.mosquitto.models  # noqa: F401
import fleet_service.notify.models  # noqa: F401
import fleet_service.rollouts.models  # noqa: F401
import fleet_service.terminal.models  # noqa: F401
import fleet_service.unit_config.models  # noqa: F401
