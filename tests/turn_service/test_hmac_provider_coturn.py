"""Credentials minted by HmacProvider against a real coturn (use-auth-secret) on loopback."""

from __future__ import annotations

import asyncio
import time

import pytest
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint

from tests.turn_service.conftest import SECRET_A, SECRET_B
from tests.turn_service.coturn import Coturn
from turn_service import HmacProvider, IceCredentials


def mint(coturn: Coturn, secret: str, *, ttl: int = 300, clock=time.time) -> IceCredentials:
    urls = [f"stun:127.0.0.1:{coturn.port}", f"turn:127.0.0.1:{coturn.port}?transport=udp"]
    return HmacProvider([secret], urls, clock=clock).mint("unit-7", ttl)


class EchoProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Future[tuple[bytes, tuple[str, int]]] = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if not self.received.done():
            self.received.set_result((data, addr))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def assert_allocated(result, coturn: Coturn) -> None:
    assert result.returncode == 0, f"uclient failed:\n{result.stdout[-1500:]}\n{result.stderr[-500:]}\n{coturn.log()}"
    assert "Total lost packets 0 " in result.stdout


async def test_uclient_allocates_with_minted_credentials_of_either_secret(coturn: Coturn) -> None:
    # Rotation: coturn lists both secrets, so credentials minted from the old or the new one work.
    creds_a, creds_b = mint(coturn, SECRET_A), mint(coturn, SECRET_B)
    assert creds_a.credential != creds_b.credential
    result_a, result_b = await asyncio.gather(
        asyncio.to_thread(coturn.uclient, creds_a.username, creds_a.credential),
        asyncio.to_thread(coturn.uclient, creds_b.username, creds_b.credential),
    )
    assert_allocated(result_a, coturn)
    assert_allocated(result_b, coturn)


@pytest.mark.parametrize("why", ["wrong secret", "expired"])
def test_uclient_is_refused(coturn: Coturn, why: str) -> None:
    if why == "wrong secret":
        creds = mint(coturn, "not-the-coturn-secret")
    else:
        creds = mint(coturn, SECRET_A, ttl=60, clock=lambda: time.time() - 3600)
    result = coturn.uclient(creds.username, creds.credential)
    assert result.returncode != 0
    assert "Cannot complete Allocation" in result.stdout + result.stderr


async def test_aioice_allocation_relays_to_peer(coturn: Coturn) -> None:
    creds = mint(coturn, SECRET_B)
    transport, protocol = await asyncio.wait_for(
        create_turn_endpoint(EchoProtocol, ("127.0.0.1", coturn.port), creds.username, creds.credential), 10
    )
    try:
        relay_host, relay_port = transport.get_extra_info("sockname")
        assert relay_host == "127.0.0.1"
        assert coturn.min_port <= relay_port <= coturn.max_port
        # turnutils_peer echoes: the datagram goes out through the relay and comes back through it.
        transport.sendto(b"hello through the relay", ("127.0.0.1", coturn.peer_port))
        data, addr = await asyncio.wait_for(protocol.received, 5)
        assert data == b"hello through the relay"
        assert addr == ("127.0.0.1", coturn.peer_port)
    finally:
        transport.close()
        await asyncio.wait_for(protocol.closed, 5)


@pytest.mark.parametrize("why", ["wrong secret", "expired"])
async def test_aioice_allocation_is_refused(coturn: Coturn, why: str) -> None:
    if why == "wrong secret":
        creds = mint(coturn, "not-the-coturn-secret")
    else:
        creds = mint(coturn, SECRET_A, ttl=60, clock=lambda: time.time() - 3600)
    with pytest.raises(TransactionFailed, match="401"):
        await asyncio.wait_for(
            create_turn_endpoint(EchoProtocol, ("127.0.0.1", coturn.port), creds.username, creds.credential), 10
        )
