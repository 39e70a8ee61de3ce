#!/bin/sh
# Install the fleet agent on a recorder unit (run as root).
#
#   FLEET_AGENT_SOURCE=/path/to/edge_fleet-0.1.0-py3-none-any.whl FLEET_AGENT_SHA256=<its digest> \
#     sh install.sh --device-id r58-hall-a --secret-file /root/r58-hall-a.secret \
#        --broker-url mqtts://fleet.example.com:8883 --unit recorder.service --repo /opt/recorder
#
# Makes a virtualenv in $FLEET_AGENT_PREFIX (default /opt/fleet-agent), installs the package into it, then
# runs `python -m agent install` with the given options: it writes /etc/fleet-agent/agent.toml, the
# root-only secret /etc/fleet-agent/secret, the hardened fleet-agent.service, a sudoers rule for exactly
# the command lines configured with `sudo -n` (by default the restart of each unit and the reboot), creates
# the fleet-agent user and starts the service. It refuses, before writing anything, a command run as root
# that the agent user could change (e.g. a script in the checkout it updates), and any sudoers rule when
# `visudo` is missing (install the sudo package, or use --privilege polkit). See agent/README.md.
set -eu

# What gets installed is pinned and verified: the wheel of exactly FLEET_AGENT_VERSION, from a file or an https
# URL (FLEET_AGENT_SOURCE), whose SHA-256 must equal FLEET_AGENT_SHA256 -- the digest published with the
# release -- before pip sees it; pip installs that file, never a name it resolves on an index. With
# FLEET_AGENT_REQUIREMENTS (the release's requirements file with a --hash for every dependency, e.g. made by
# `pip-compile --generate-hashes`), the dependencies are installed in pip's --require-hashes mode too.
# At release: `python -m build --wheel` and `sha256sum dist/edge_fleet-VERSION-py3-none-any.whl`; publish
# the wheel and its digest (and the requirements file) together, and bump VERSION below.
VERSION=${FLEET_AGENT_VERSION:-0.1.0}
WHEEL=edge_fleet-$VERSION-py3-none-any.whl
PREFIX=${FLEET_AGENT_PREFIX:-/opt/fleet-agent}
SOURCE=${FLEET_AGENT_SOURCE:-./$WHEEL}
SHA256=${FLEET_AGENT_SHA256:-}
REQUIREMENTS=${FLEET_AGENT_REQUIREMENTS:-}
PYTHON=${PYTHON:-python3}

fail() {
    echo "install.sh: $*" >&2
    exit 1
}

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (it writes /etc and creates a system user)" >&2
    exit 1
fi
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "install.sh: $PYTHON not found (Python 3.11 or newer is needed)" >&2
    exit 1
fi

case "$SHA256" in
    ????????????????????????????????????????????????????????????????) ;;
    *) fail "set FLEET_AGENT_SHA256 to the SHA-256 (64 hex digits) published with $WHEEL" ;;
esac
case "$SHA256" in *[!0-9a-fA-F]*) fail "FLEET_AGENT_SHA256 is not 64 hex digits" ;; esac
case "${SOURCE##*/}" in
    "$WHEEL") ;;
    *) fail "FLEET_AGENT_SOURCE must name $WHEEL: this installer is pinned to version $VERSION" ;;
esac

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
case "$SOURCE" in
    https://*) curl -fsSL --proto '=https' --tlsv1.2 -o "$WORK/$WHEEL" "$SOURCE" || fail "cannot download $SOURCE" ;;
    *://*) fail "FLEET_AGENT_SOURCE must be a file or an https:// URL, not $SOURCE" ;;
    *) cp "$SOURCE" "$WORK/$WHEEL" || fail "cannot read $SOURCE" ;;
esac
if command -v sha256sum >/dev/null 2>&1; then
    ACTUAL=$(sha256sum "$WORK/$WHEEL" | cut -d' ' -f1)
else
    ACTUAL=$(openssl dgst -sha256 -r "$WORK/$WHEEL" | cut -d' ' -f1)
fi
if [ "$ACTUAL" != "$(echo "$SHA256" | tr 'A-F' 'a-f')" ]; then
    fail "$WHEEL has SHA-256 $ACTUAL, not the published $SHA256: refusing to install it"
fi

"$PYTHON" -m venv "$PREFIX/venv"
if [ -n "$REQUIREMENTS" ]; then
    "$PREFIX/venv/bin/pip" install --quiet --require-hashes --no-deps -r "$REQUIREMENTS"
    "$PREFIX/venv/bin/pip" install --quiet --no-deps "$WORK/$WHEEL"
else
    "$PREFIX/venv/bin/pip" install --quiet "$WORK/$WHEEL"
fi
rm -rf "$WORK"
trap - EXIT
exec "$PREFIX/venv/bin/python" -m agent install --exec "$PREFIX/venv/bin/python -m agent" "$@"
