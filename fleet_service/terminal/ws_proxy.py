"""A browser's WebSocket on the proxy path, carried to the unit's server over one TCP stream.

The service answers the browser's handshake itself (ASGI gives no raw socket), so toward the unit it makes its own
handshake (websockets' sans-I/O client, with the browser's subprotocols and the rewritten headers) and then
carries each message across: text stays text, binary stays binary, a close is passed on with its code.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

from fleet_service.terminal.http_proxy import UpstreamBroken
from fleet_service.terminal.tcp_stream import TcpStream

MAX_MESSAGE = 16 * 1024 * 1024
_HANDSHAKE = {
    "host",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",  # ours to negotiate with the browser; toward the unit: none
}


class UnitWebSocket:
    def __init__(self, stream: TcpStream, path: str, headers: Iterable[tuple[str, str]], subprotocols: list[str]):
        uri = parse_uri(f"ws://127.0.0.1:{stream.port}{path}")
        self.stream = stream
        self.proto = ClientProtocol(
            uri, subprotocols=[Subprotocol(p) for p in subprotocols] or None, max_size=MAX_MESSAGE
        )
        self.request = self.proto.connect()
        for name, value in headers:
            if name.lower() not in _HANDSHAKE:
                self.request.headers[name] = value
        self._parts: list[bytes] = []
        self._text = False
        self._pending: list[object] = []  # frames that came with the handshake's answer

    async def _flush(self) -> None:
        for data in self.proto.data_to_send():
            if data:
                await self.stream.write(data)

    async def handshake(self) -> str | None:
        """Send the unit our handshake; the subprotocol it chose. UpstreamBroken when it does not switch protocols."""
        self.proto.send_request(self.request)
        await self._flush()
        while True:
            data = await self.stream.read()
            if data:
                self.proto.receive_data(data)
            else:
                self.proto.receive_eof()
            events = self.proto.events_received()
            for i, event in enumerate(events):
                if isinstance(event, Response):
                    if self.proto.handshake_exc is not None:
                        raise UpstreamBroken(
                            f"the unit's server refused the WebSocket: {self.proto.handshake_exc}", True
                        )
                    self._pending = list(events[i + 1 :])
                    return event.headers.get("Sec-WebSocket-Protocol")
            if not data:
                raise UpstreamBroken("the unit's server closed the connection during the WebSocket handshake", False)

    async def bridge(self, ws: WebSocket) -> tuple[int, str]:
        """Carry messages both ways until one side closes; the code and reason to close the browser's socket."""
        down = asyncio.create_task(self._to_browser(ws))
        up = asyncio.create_task(self._to_unit(ws))
        try:
            done, _ = await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
            return (down if down in done else up).result()
        finally:
            for task in (down, up):
                task.cancel()
            await asyncio.gather(down, up, return_exceptions=True)

    async def _to_unit(self, ws: WebSocket) -> tuple[int, str]:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                code = int(message.get("code") or 1000)
                self.proto.send_close(code if code not in (1005, 1006) else 1000, message.get("reason") or "")
                await self._flush()
                return code, ""
            if message.get("bytes") is not None:
                self.proto.send_binary(message["bytes"])
            elif message.get("text") is not None:
                self.proto.send_text(message["text"].encode("utf-8"))
            await self._flush()

    async def _to_browser(self, ws: WebSocket) -> tuple[int, str]:
        for frame in self._pending:
            if (closed := await self._deliver(ws, frame)) is not None:
                return closed
        try:
            while True:
                data = await self.stream.read()
                if data:
                    self.proto.receive_data(data)
                else:
                    self.proto.receive_eof()
                await self._flush()  # pongs, our close answer
                for frame in self.proto.events_received():
                    if (closed := await self._deliver(ws, frame)) is not None:
                        return closed
                if not data:
                    return 1006 if self.proto.close_code is None else self.proto.close_code, "the unit closed"
        except (WebSocketDisconnect, OSError, RuntimeError):
            return 1001, "the browser left"

    async def _deliver(self, ws: WebSocket, frame: object) -> tuple[int, str] | None:
        if not isinstance(frame, Frame):
            return None
        if frame.opcode is Opcode.CLOSE:
            code = self.proto.close_code or 1000
            return (1000 if code in (1005, 1006) else code), self.proto.close_reason or ""
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self._parts, self._text = [bytes(frame.data)], frame.opcode is Opcode.TEXT
        elif frame.opcode is Opcode.CONT:
            self._parts.append(bytes(frame.data))
        else:
            return None  # ping and pong: answered by the protocol object
        if frame.fin:
            data, self._parts = b"".join(self._parts), []
            if self._text:
                await ws.send_text(data.decode("utf-8", "replace"))
            else:
                await ws.send_bytes(data)
        return None
