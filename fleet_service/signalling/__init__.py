"""WebRTC support: the signalling relay to units and TURN credentials."""
