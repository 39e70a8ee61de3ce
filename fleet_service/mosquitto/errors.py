"""The one error of a managed Mosquitto, shared by its files and its dynamic security plugin."""

from fleet_service.errors import Unavailable


class MosquittoError(Unavailable, RuntimeError):
    """The managed Mosquitto's files could not be written or the broker could not be told to reload."""
