"""The e-mail sender against a real SMTP server (aiosmtpd): STARTTLS and AUTH required, implicit TLS, refusals,
a server that is down or silent, threading of the resolved mail, and its configuration check."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet_service.errors import Invalid
from fleet_service.notify.message import Channel
from fleet_service.notify.senders import email as sender
from tests.support.notify_messages import alert_item, firing, resolved
from tests.support.services import free_port
from tests.support.smtp import (
    PASSWORD,
    REFUSE_FOR_NOW,
    REFUSE_PERMANENTLY,
    USER,
    Certificate,
    SmtpServer,
    make_certificate,
)

TO = ["ops@example.test", "oncall@example.test"]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def smtp(certificate: Certificate) -> Iterator[SmtpServer]:
    server = SmtpServer(certificate).start()
    yield server
    server.stop()


@pytest.fixture
def smtps(certificate: Certificate) -> Iterator[SmtpServer]:
    server = SmtpServer(certificate, implicit_tls=True).start()
    yield server
    server.stop()


def channel(port: int, ca_file: Path | None, *, password: str = PASSWORD, **config: Any) -> Channel:
    base: dict[str, Any] = {
        "host": "localhost",
        "port": port,
        "username": USER,
        "from": "Fleet <fleet@example.test>",
        "to": TO,
    }
    if ca_file is not None:
        base["ca_file"] = str(ca_file)
    public, secrets = sender.check_config({**base, **config}, {"password": password})
    return Channel(id="ch-mail", name="Ops mail", kind="email", config=public, secrets=secrets)


async def test_a_firing_alert_arrives_over_starttls_with_auth(smtp: SmtpServer, certificate: Certificate):
    message = firing(alert_item(7, "cam-1"), alert_item(8, "cam-2"), dashboard_url="https://fleet.example.test/")

    result = await sender.send(channel(smtp.port, certificate.cert), message, timeout_s=10)

    assert result.ok, result.error
    (mail,) = smtp.wait_for(1)
    assert mail.authenticated_as == USER
    assert mail.mail_from == "fleet@example.test"
    assert sorted(mail.rcpt_tos) == sorted(TO)
    assert mail.message["From"] == "Fleet <fleet@example.test>"
    assert [a.strip() for a in mail.message["To"].split(",")] == TO
    assert mail.message["Subject"] == "[FIRING] warning: Unit too hot — 2 units"
    body = mail.message.get_content()
    assert "- Camera 1 (cam-1): temp_c=91.5, since " in body
    assert "- Camera 2 (cam-2): temp_c=91.5, since " in body
    assert "https://fleet.example.test/#/alerts" in body
    assert "Ops mail" in body  # the footer names the channel the mail came through
    assert mail.message["Message-ID"].endswith("@example.test>")


async def test_the_resolved_mail_threads_under_the_firing_one(smtp: SmtpServer, certificate: Certificate):
    ch = channel(smtp.port, certificate.cert)
    fired = firing(alert_item(7, "cam-1"))

    assert (await sender.send(ch, fired, timeout_s=10)).ok
    assert (await sender.send(ch, resolved(fired), timeout_s=10)).ok

    first, second = (m.message for m in smtp.wait_for(2))
    assert second["Subject"] == "[RESOLVED] warning: Unit too hot — Camera 1"
    assert "resolved " in second.get_content()
    assert second["In-Reply-To"] == first["Message-ID"]
    assert first["Message-ID"] in second["References"].split()
    assert second["Message-ID"] != first["Message-ID"]


async def test_a_retried_notification_keeps_its_message_id_so_clients_drop_the_duplicate(
    smtp: SmtpServer, certificate: Certificate
):
    ch = channel(smtp.port, certificate.cert)
    fired = firing(alert_item(7, "cam-1"))
    for _ in range(2):
        assert (await sender.send(ch, fired, timeout_s=10)).ok
    first, second = (m.message for m in smtp.wait_for(2))
    assert first["Message-ID"] == second["Message-ID"]


async def test_alerts_resolved_together_reference_each_one_that_fired_alone(smtp: SmtpServer, certificate: Certificate):
    ch = channel(smtp.port, certificate.cert)
    one, two = alert_item(7, "cam-1"), alert_item(8, "cam-2")
    assert (await sender.send(ch, firing(one), timeout_s=10)).ok
    assert (await sender.send(ch, firing(two), timeout_s=10)).ok
    assert (await sender.send(ch, resolved(firing(one, two)), timeout_s=10)).ok

    first, second, both = (m.message for m in smtp.wait_for(3))
    references = both["References"].split()
    assert first["Message-ID"] in references
    assert second["Message-ID"] in references


async def test_implicit_tls_works_too(smtps: SmtpServer, certificate: Certificate):
    result = await sender.send(
        channel(smtps.port, certificate.cert, security="tls"), firing(alert_item(7, "cam-1")), timeout_s=10
    )
    assert result.ok, result.error
    (mail,) = smtps.wait_for(1)
    assert mail.authenticated_as == USER
    assert mail.message["Subject"] == "[FIRING] warning: Unit too hot — Camera 1"


async def test_a_wrong_password_is_not_retried_and_never_logged(
    smtp: SmtpServer, certificate: Certificate, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-Right-pa55word-93ad"

    refused = await sender.send(
        channel(smtp.port, certificate.cert, password=wrong), firing(alert_item(7, "cam-1")), 10
    )
    accepted = await sender.send(channel(smtp.port, certificate.cert), firing(alert_item(8, "cam-2")), 10)

    assert not refused.ok and refused.retry is False
    assert "535" in (refused.error or "")
    assert accepted.ok
    assert len(smtp.wait_for(1)) == 1
    assert caplog.records, "the sender and the server log something at DEBUG"
    for record in caplog.records:
        assert wrong not in record.getMessage() and PASSWORD not in record.getMessage()
    assert wrong not in (refused.error or "")


async def test_a_server_that_is_down_is_retried(certificate: Certificate):
    result = await sender.send(channel(free_port(), certificate.cert), firing(alert_item(7, "cam-1")), timeout_s=5)
    assert not result.ok and result.retry is True
    assert result.error


async def test_a_server_that_never_answers_is_retried_after_the_timeout(certificate: Certificate):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        result = await sender.send(
            channel(silent.getsockname()[1], certificate.cert), firing(alert_item(7, "cam-1")), timeout_s=1
        )
        took = time.monotonic() - started
    assert not result.ok and result.retry is True
    assert "timed out" in (result.error or "")
    assert took < 5


async def test_a_recipient_refused_for_good_is_not_retried(smtp: SmtpServer, certificate: Certificate):
    result = await sender.send(
        channel(smtp.port, certificate.cert, to=[REFUSE_PERMANENTLY]), firing(alert_item(7, "cam-1")), 10
    )
    assert not result.ok and result.retry is False
    assert REFUSE_PERMANENTLY in (result.error or "") and "550" in (result.error or "")


async def test_a_recipient_refused_for_now_is_retried(smtp: SmtpServer, certificate: Certificate):
    result = await sender.send(
        channel(smtp.port, certificate.cert, to=[REFUSE_FOR_NOW]), firing(alert_item(7, "cam-1")), 10
    )
    assert not result.ok and result.retry is True
    assert "450" in (result.error or "")


async def test_one_refused_recipient_among_good_ones_is_reported(smtp: SmtpServer, certificate: Certificate):
    result = await sender.send(
        channel(smtp.port, certificate.cert, to=["ops@example.test", REFUSE_PERMANENTLY]),
        firing(alert_item(7, "cam-1")),
        10,
    )
    (mail,) = smtp.wait_for(1)
    assert mail.rcpt_tos == ["ops@example.test"]
    assert not result.ok and result.retry is False  # a retry would mail ops@ again and still not reach the other
    assert REFUSE_PERMANENTLY in (result.error or "")


async def test_an_unknown_certificate_authority_is_refused_unless_verification_is_off(smtp: SmtpServer):
    message = firing(alert_item(7, "cam-1"))
    refused = await sender.send(channel(smtp.port, None), message, timeout_s=10)
    assert not refused.ok and refused.retry is False
    assert "certificate" in (refused.error or "").lower()
    assert smtp.received == []

    unverified = await sender.send(channel(smtp.port, None, verify_tls=False), message, timeout_s=10)
    assert unverified.ok, unverified.error
    assert len(smtp.wait_for(1)) == 1


# --- configuration -----------------------------------------------------------------------------------------------

GOOD: dict[str, Any] = {"host": "smtp.example.test", "username": "u", "from": "fleet@example.test", "to": ["a@b.test"]}


def test_defaults_are_filled_and_the_password_stays_secret():
    public, secrets = sender.check_config(dict(GOOD), {"password": "pw-123"})
    assert public == {
        "host": "smtp.example.test",
        "port": 587,
        "security": "starttls",
        "username": "u",
        "from": "fleet@example.test",
        "to": ["a@b.test"],
        "verify_tls": True,
        "ca_file": None,
    }
    assert secrets == {"password": "pw-123"}
    assert "pw-123" not in repr(public)
    assert sender.check_config({**GOOD, "security": "tls"}, {"password": "x"})[0]["port"] == 465


def test_no_login_needs_no_password():
    public, secrets = sender.check_config({"host": "mx", "from": "f@x.test", "to": ["t@x.test"]}, {})
    assert public["username"] is None and secrets == {}


@pytest.mark.parametrize(
    ("change", "secrets", "field"),
    [
        ({"host": ""}, None, "host"),
        ({"host": "bad host"}, None, "host"),
        ({"host": None}, None, "host"),
        ({"port": 0}, None, "port"),
        ({"port": 70000}, None, "port"),
        ({"port": "25"}, None, "port"),
        ({"port": True}, None, "port"),
        ({"security": "ssl"}, None, "security"),
        ({"security": "none"}, None, "security"),  # a password would cross the network in clear
        ({"username": ""}, None, "username"),
        ({"username": 5}, None, "username"),
        ({"from": "not-an-address"}, None, "from"),
        ({"from": "a@b.test\r\nBcc: x@y.test"}, None, "from"),
        ({"from": None}, None, "from"),
        ({"to": []}, None, "to"),
        ({"to": "a@b.test"}, None, "to"),
        ({"to": ["a@b.test", "nope"]}, None, "to"),
        ({"to": ["a@b.test", "A@b.test"]}, None, "to"),
        ({"to": ["x@y.test\nBcc: z@y.test"]}, None, "to"),
        ({"verify_tls": "yes"}, None, "verify_tls"),
        ({"ca_file": "/no/such/ca.pem"}, None, "ca_file"),
        ({"ca_file": 3}, None, "ca_file"),
        ({"colour": "red"}, None, "colour"),
        ({}, {}, "password"),  # a username needs a password
        ({}, {"password": ""}, "password"),
        ({}, {"password": "pw", "token": "t"}, "token"),
        ({"username": None}, {"password": "pw"}, "username"),  # a password needs a username
    ],
)
def test_each_bad_field_is_named(change: dict[str, Any], secrets: dict[str, Any] | None, field: str):
    config = {k: v for k, v in {**GOOD, **change}.items()}
    with pytest.raises(Invalid) as caught:
        sender.check_config(config, {"password": "pw"} if secrets is None else secrets)
    assert field in str(caught.value)
    assert "pw" not in str(caught.value).replace("password", "")


def test_a_missing_required_field_is_named():
    for name in ("host", "from", "to"):
        config = {k: v for k, v in GOOD.items() if k != name}
        with pytest.raises(Invalid, match=name):
            sender.check_config(config, {"password": "pw"})


def test_plain_smtp_without_login_is_allowed_when_asked_for():
    public, _ = sender.check_config({"host": "relay", "security": "none", "from": "f@x.test", "to": ["t@x.test"]}, {})
    assert public["security"] == "none" and public["port"] == 587


def test_a_ca_file_that_is_no_certificate_is_refused(tmp_path: Path):
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(Invalid, match="ca_file"):
        sender.check_config({**GOOD, "ca_file": str(junk)}, {"password": "pw"})


def test_the_module_keeps_the_sender_contract():
    assert sender.REFRESH_S is None
