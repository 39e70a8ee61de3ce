"""`fleet forward UNIT [LOCALPORT:]REMOTEPORT`: a local TCP port that leads to 127.0.0.1:REMOTEPORT on a unit.

Each connection accepted locally opens its own `WS /api/devices/{id}/forward/{port}` on the fleet service and the
bytes are pumped both ways (binary messages) until either side closes; the other side is then closed once what
was in flight is delivered. Ctrl-C stops listening and closes the open connections.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
from typing import Any

from fleet_cli.options import add_api_options, api_socket_base
from fleet_cli.service_socket import open_socket

_BUFFER = 64 * 1024


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "forward",
        help="forward a local port to a port on a unit's loopback (through the fleet service)",
        description="Listen on a local port; each connection reaches 127.0.0.1:REMOTEPORT on the unit.",
    )
    parser.add_argument("unit", help="the unit's id")
    parser.add_argument("ports", metavar="[LOCALPORT:]REMOTEPORT", help="e.g. 8080, or 18080:8080 (0: any free port)")
    parser.add_argument("--bind", default="127.0.0.1", help="local address to listen on (default 127.0.0.1)")
    add_api_options(parser)
    parser.set_defaults(func=run)


def parse_ports(text: str) -> tuple[int, int]:
    """`8080` -> (8080, 8080); `18080:8080` -> (18080, 8080); ValueError with the reason otherwise."""
    local, _, remote = text.rpartition(":")
    if not local:
        local = remote
    if not (local.isdigit() and remote.isdigit()) or not 0 <= int(local) <= 65535 or not 1 <= int(remote) <= 65535:
        raise ValueError(f"{text!r} is not [LOCALPORT:]REMOTEPORT (ports 1..65535; LOCALPORT 0 picks a free one)")
    return int(local), int(remote)


def run(args: argparse.Namespace) -> int:
    target = api_socket_base(args, "forward")
    if target is None:
        return 2
    base, token = target
    try:
        local, remote = parse_ports(args.ports)
    except ValueError as exc:
        print(f"fleet forward: {exc}", file=sys.stderr)
        return 2
    url = f"{base}/api/devices/{args.unit}/forward/{remote}"
    try:
        listener = socket.create_server((args.bind, local), reuse_port=False)
    except OSError as exc:
        print(f"fleet forward: cannot listen on {args.bind}:{local}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    host, port = listener.getsockname()[:2]
    print(f"forwarding {host}:{port} -> {args.unit} 127.0.0.1:{remote} (Ctrl-C stops)", flush=True)
    try:
        with listener:
            while True:
                conn, peer = listener.accept()
                threading.Thread(target=_serve, args=(conn, url, token), name=f"forward-{peer[1]}", daemon=True).start()
    except KeyboardInterrupt:
        return 0


def _serve(conn: socket.socket, url: str, token: str) -> None:
    """One local connection: its own WebSocket, bytes pumped both ways until either side closes."""
    from websockets.exceptions import ConnectionClosed

    with conn:
        ws = open_socket(url, token, "forward", max_size=None)
        if ws is None:
            return
        with ws:
            sender = threading.Thread(target=_local_to_ws, args=(conn, ws), daemon=True)
            sender.start()
            try:
                for message in ws:
                    if isinstance(message, bytes):
                        conn.sendall(message)
            except ConnectionClosed:
                pass
            except OSError:
                return  # the local side went away: closing the WebSocket ends the remote connection
            finally:
                rcvd = ws.protocol.close_rcvd
                if rcvd is not None and rcvd.code != 1000:
                    print(f"fleet forward: {rcvd.reason or f'closed ({rcvd.code})'}", file=sys.stderr, flush=True)
            try:
                conn.shutdown(socket.SHUT_WR)  # the unit's server closed: so does ours, after what it sent
            except OSError:
                pass


def _local_to_ws(conn: socket.socket, ws: Any) -> None:
    from websockets.exceptions import ConnectionClosed

    try:
        while data := conn.recv(_BUFFER):
            ws.send(data)
    except (OSError, ConnectionClosed):
        pass
    try:
        ws.close()  # the local client closed (or failed): the remote connection ends after what it sent
    except Exception:  # noqa: BLE001 - already closed
        pass
