"""Remote sessions on units, of two kinds: terminals (an operator's WebSocket bridged to a shell, with its audit row
and asciinema recording) and TCP streams (the port forward's WebSocket and the HTTP/WebSocket proxy to a unit's
loopback port), both carried by the same session frames and audited in `terminal_session`."""
