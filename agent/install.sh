#!/bin/sh
# Install the fleet agent on a recorder unit (run as root).
#
#   FLEET_AGENT_SOURCE=/path/to/edge_fleet-0.1.0-py3-none-any.whl \
#     sh install.sh --device-id r58-hall-a --secret-file /root/r58-hall-a.secret \
#        --broker-url mqtts://fleet.example.com:8883 --unit recorder.service --repo /opt/recorder
#
# Makes a virtualenv in $FLEET_AGENT_PREFIX (default /opt/fleet-agent), installs the package into it, then
# runs `python -m agent install` with the given options: it writes /etc/fleet-agent/agent.toml, the
# root-only secret /etc/fleet-agent/secret, the hardened fleet-agent.service, a sudoers rule for exactly
# the configured restart and reboot commands, creates the fleet-agent user and starts the service.
# See agent/README.md for every option.
set -eu

PREFIX=${FLEET_AGENT_PREFIX:-/opt/fleet-agent}
SOURCE=${FLEET_AGENT_SOURCE:-edge-fleet}
PYTHON=${PYTHON:-python3}

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (it writes /etc and creates a system user)" >&2
    exit 1
fi
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "install.sh: $PYTHON not found (Python 3.11 or newer is needed)" >&2
    exit 1
fi

"$PYTHON" -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --quiet --upgrade "$SOURCE"
exec "$PREFIX/venv/bin/python" -m agent install --exec "$PREFIX/venv/bin/python -m agent" "$@"
