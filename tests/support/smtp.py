"""A real SMTP server for the e-mail sender's tests: aiosmtpd on a free loopback port, TLS with a throw-away
certificate for `localhost` (made with the `openssl` tool), AUTH with one user, every accepted message kept."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import warnings
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from tests.support.services import free_port, require

USER = "fleet-mailer"
PASSWORD = "s3cret-Smtp-pa55word-7c1e"
REFUSE_PERMANENTLY = "nobody@refused.test"  # RCPT answered 550
REFUSE_FOR_NOW = "later@busy.test"  # RCPT answered 450


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


def make_certificate(directory: Path) -> Certificate:
    """A self-signed certificate for localhost and 127.0.0.1, valid for a day."""
    require(shutil.which("openssl") is not None, "the openssl tool is not installed (apt install openssl)")
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return Certificate(cert, key)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    authenticated_as: str | None


@dataclass
class _Handler:
    received: list[Received] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 (aiosmtpd's hook name)
        if address == REFUSE_PERMANENTLY:
            return "550 5.1.1 No such user here"
        if address == REFUSE_FOR_NOW:
            return "450 4.2.1 Mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's hook name)
        parsed = message_from_bytes(envelope.original_content, policy=policy.default)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        with self.arrived:
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), parsed, login))
            self.arrived.notify_all()
        return "250 Message accepted"


def _authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data == (USER.encode(), PASSWORD.encode())
    return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


class _ImplicitTlsController(Controller):
    def factory(self) -> SMTP:
        # The whole connection is TLS here, but aiosmtpd only counts STARTTLS as TLS for AUTH; it warns when told
        # to allow AUTH without it, and the suite turns warnings into errors.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return super().factory()


@dataclass
class SmtpServer:
    """`implicit_tls`: TLS from the first byte (the port-465 style); otherwise STARTTLS is required."""

    certificate: Certificate
    implicit_tls: bool = False
    port: int = field(default_factory=free_port)
    handler: _Handler = field(default_factory=_Handler)
    controller: Controller | None = None

    def start(self) -> SmtpServer:
        ctx = self.certificate.server_context()
        common: dict[str, Any] = {
            "hostname": "127.0.0.1",
            "port": self.port,
            "server_hostname": "localhost",
            "auth_required": True,
            "authenticator": _authenticator,
        }
        if self.implicit_tls:
            self.controller = _ImplicitTlsController(self.handler, ssl_context=ctx, auth_require_tls=False, **common)
        else:
            self.controller = Controller(self.handler, tls_context=ctx, require_starttls=True, **common)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        with self.handler.arrived:
            if not self.handler.arrived.wait_for(lambda: len(self.handler.received) >= count, timeout):
                raise AssertionError(f"{len(self.handler.received)} messages arrived, expected {count}")
            return list(self.handler.received)
