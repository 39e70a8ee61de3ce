"""turn_service: short-lived TURN credentials from coturn's shared secret (hmac) or Cloudflare.

settings = load_settings()            # FLEET_TURN_*; TurnConfigError if invalid
issuer = TurnIssuer(settings)         # TurnConfigError if the provider cannot work
creds = await issuer.issue("unit-7", ttl=600)
creds.to_api()  /  creds.to_legacy()
await issuer.aclose()
"""

from turn_service.cloudflare_provider import CloudflareProvider
from turn_service.config import TurnSettings, generate_secret, load_settings
from turn_service.credentials import IceCredentials, clamp_ttl, shape_ice_servers
from turn_service.errors import (
    TurnConfigError,
    TurnError,
    TurnRateLimitError,
    TurnUnsupportedError,
    TurnUpstreamError,
)
from turn_service.hmac_provider import HmacProvider, turn_password
from turn_service.issuer import TurnIssuer
from turn_service.ratelimit import RateLimiter

__all__ = [
    "CloudflareProvider",
    "HmacProvider",
    "IceCredentials",
    "RateLimiter",
    "TurnConfigError",
    "TurnError",
    "TurnIssuer",
    "TurnRateLimitError",
    "TurnSettings",
    "TurnUnsupportedError",
    "TurnUpstreamError",
    "clamp_ttl",
    "generate_secret",
    "load_settings",
    "shape_ice_servers",
    "turn_password",
]
