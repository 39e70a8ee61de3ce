"""E-mail through an SMTP server: STARTTLS (default, port 587), implicit TLS (port 465) or, only when asked for,
plain SMTP without a login. The stdlib `smtplib` runs in a worker thread with one deadline for the whole attempt.

Threading: the mail for a firing notification gets a Message-ID derived from its rule and alert ids; the resolved
mail for the same alerts answers it (`In-Reply-To`) and lists, in `References`, that id and, for several alerts,
the id each alert would have had firing alone. A retried notification keeps its Message-ID, so a client shows a
duplicate once. Test notifications get a random id and thread with nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import smtplib
import ssl
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any

from fleet_service.errors import Invalid
from fleet_service.notify.message import Channel, Message, SendResult

log = logging.getLogger(__name__)

REFRESH_S: float | None = None  # a mail is sent once; nothing to refresh

SECURITY = ("starttls", "tls", "none")
DEFAULT_PORT = {"starttls": 587, "tls": 465, "none": 587}
FIELDS = {"host", "port", "security", "username", "from", "to", "verify_tls", "ca_file"}
SECRETS = {"password"}
MAX_RECIPIENTS = 100
MAX_REFERENCES = 20

_HOST = re.compile(r"^[A-Za-z0-9._:-]{1,253}$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDRESS = re.compile(rf"^[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]{{1,64}}@{_LABEL}(?:\.{_LABEL})*$")
_ID_PART = re.compile(r"[^A-Za-z0-9-]+")


# --- configuration -----------------------------------------------------------------------------------------------


def check_config(config: dict[str, Any], secrets: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The stored public config (defaults filled in) and the write-only secrets, or Invalid naming the field.
    `secrets` is the whole set the channel will have (`password` when `username` is set)."""
    for name in config:
        if name not in FIELDS:
            raise Invalid(f"{name}: unknown field for an e-mail channel (known: {', '.join(sorted(FIELDS))})")
    for name in secrets:
        if name not in SECRETS:
            raise Invalid(f"{name}: unknown secret for an e-mail channel (known: password)")
    security = config.get("security", "starttls")
    if security not in SECURITY:
        raise Invalid(f"security: must be one of {', '.join(SECURITY)}")
    username = _username(config.get("username"))
    password = secrets.get("password")
    if username is not None and (not isinstance(password, str) or not password):
        raise Invalid("password: required with a username")
    if username is None and password is not None:
        raise Invalid("username: a password is given but no username to log in with")
    if username is not None and security == "none":
        raise Invalid("security: a login is never sent unencrypted; use starttls or tls")
    public = {
        "host": _host(config.get("host")),
        "port": _port(config.get("port", DEFAULT_PORT[security])),
        "security": security,
        "username": username,
        "from": _sender(config.get("from")),
        "to": _recipients(config.get("to")),
        "verify_tls": _flag(config.get("verify_tls", True), "verify_tls"),
        "ca_file": _ca_file(config.get("ca_file")),
    }
    return public, ({"password": password} if isinstance(password, str) else {})


def _host(value: Any) -> str:
    if not isinstance(value, str) or not _HOST.match(value):
        raise Invalid("host: an SMTP server's host name or IP address is required")
    return value


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise Invalid("port: must be a whole number from 1 to 65535")
    return value


def _username(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 320 or any(c in value for c in "\r\n\0"):
        raise Invalid("username: must be a non-empty line of text (or left out for no login)")
    return value


def _address(value: Any, field: str) -> tuple[str, str]:
    """(what goes in the header, the bare address) of `Name <a@b>` or `a@b`."""
    if not isinstance(value, str) or any(c in value for c in "\r\n\0") or len(value) > 320:
        raise Invalid(f"{field}: {value!r} is not an e-mail address")
    _, address = parseaddr(value)
    if not _ADDRESS.match(address) or ".." in address:
        raise Invalid(f"{field}: {value!r} is not an e-mail address")
    return value.strip(), address


def _sender(value: Any) -> str:
    if value is None:
        raise Invalid("from: the sender's address is required")
    return _address(value, "from")[0]


def _recipients(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise Invalid("to: a list of at least one e-mail address is required")
    if len(value) > MAX_RECIPIENTS:
        raise Invalid(f"to: at most {MAX_RECIPIENTS} addresses")
    seen: set[str] = set()
    out = []
    for item in value:
        header, address = _address(item, "to")
        if address.lower() in seen:
            raise Invalid(f"to: {address} is listed twice")
        seen.add(address.lower())
        out.append(header)
    return out


def _flag(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"{field}: must be true or false")
    return value


def _ca_file(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise Invalid("ca_file: must be the path of a PEM file of CA certificates")
    try:
        ssl.create_default_context(cafile=value)
    except (OSError, ssl.SSLError) as exc:
        raise Invalid(f"ca_file: cannot load {value}: {exc.strerror or exc}") from None
    return value


# --- the mail ----------------------------------------------------------------------------------------------------


def _domain(config: dict[str, Any]) -> str:
    return parseaddr(config["from"])[1].rpartition("@")[2] or "fleet.invalid"


def _thread_id(rule_id: str, alert_ids: Iterable[int], domain: str) -> str:
    """The Message-ID of the firing mail for these alerts of this rule: the same whenever it is computed."""
    ids = sorted(set(alert_ids))
    part = "-".join(map(str, ids)) if len(ids) <= 8 else "h" + hashlib.sha256(repr(ids).encode()).hexdigest()[:24]
    rule = _ID_PART.sub("_", rule_id)[:64] or "rule"
    return f"<fleet-alert.{rule}.{part}@{domain}>"


def _threading(message: Message, domain: str) -> dict[str, str]:
    if message.test:
        return {"Message-ID": make_msgid("fleet-test", domain=domain)}
    ids = [a.id for a in message.alerts]
    fired = _thread_id(message.rule_id, ids, domain)
    if message.status == "firing":
        return {"Message-ID": fired}
    alone = [_thread_id(message.rule_id, [i], domain) for i in sorted(set(ids))] if len(ids) > 1 else []
    references = [fired, *alone][:MAX_REFERENCES]
    return {
        "Message-ID": fired.replace("@", ".resolved@", 1),
        "In-Reply-To": fired,
        "References": " ".join(references),
    }


def compose(channel: Channel, message: Message) -> EmailMessage:
    """The mail for `message`: subject = the title, body = the text and a footer naming the channel."""
    config = channel.config
    mail = EmailMessage()
    mail["From"] = config["from"]
    mail["To"] = ", ".join(config["to"])
    mail["Subject"] = " ".join(message.title().split())  # no line breaks, whatever a name holds
    mail["Date"] = format_datetime(datetime.now(UTC))
    mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to an alert mail
    for header, value in _threading(message, _domain(config)).items():
        mail[header] = value
    footer = f"Sent by the fleet service through the notification channel “{channel.name}”"
    footer += " (a test notification)." if message.test else f" (notification {message.notification_id})."
    mail.set_content(f"{message.text()}\n\n-- \n{footer}\n")
    return mail


# --- sending -----------------------------------------------------------------------------------------------------


async def send(channel: Channel, message: Message, timeout_s: float) -> SendResult:
    mail = compose(channel, message)
    try:
        refused = await asyncio.to_thread(_deliver, channel, mail, timeout_s)
    except Exception as exc:  # noqa: BLE001 (every failure of the attempt becomes a SendResult)
        result = _failure(exc)
    else:
        result = _partly_refused(refused, len(channel.config["to"])) if refused else SendResult(ok=True)
    if result.ok:
        log.debug("e-mail channel %s: sent %s", channel.id, mail["Message-ID"])
    else:
        log.info("e-mail channel %s: not sent (retry: %s): %s", channel.id, result.retry, result.error)
    return result


def _tls_context(config: dict[str, Any]) -> ssl.SSLContext:
    if not config["verify_tls"]:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=config["ca_file"])


def _deliver(channel: Channel, mail: EmailMessage, timeout_s: float) -> dict[str, tuple[int, bytes]]:
    """One SMTP session, every step within what is left of `timeout_s`; the recipients refused, if any."""
    config = channel.config
    deadline = time.monotonic() + timeout_s
    host, port, security = config["host"], config["port"], config["security"]
    client: smtplib.SMTP
    if security == "tls":
        client = smtplib.SMTP_SSL(host, port, timeout=timeout_s, context=_tls_context(config))
    else:
        client = smtplib.SMTP(host, port, timeout=timeout_s)
    try:
        _within(client, deadline)
        client.ehlo()
        if security == "starttls":
            _within(client, deadline)
            client.starttls(context=_tls_context(config))
            client.ehlo()
        if config["username"]:
            _within(client, deadline)
            client.login(config["username"], channel.secrets.get("password", ""))
        _within(client, deadline)
        envelope_to = [parseaddr(a)[1] for a in config["to"]]
        refused = client.send_message(mail, parseaddr(config["from"])[1], envelope_to)
        _within(client, deadline)
        client.quit()
        return refused
    finally:
        client.close()


def _within(client: smtplib.SMTP, deadline: float) -> None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    if client.sock is not None:
        client.sock.settimeout(left)


def _reply(code: int, text: bytes | str) -> str:
    words = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    return f"{code} {' '.join(words.split())}"


def _permanent(code: int) -> bool:
    return 500 <= code < 600


def _partly_refused(refused: dict[str, tuple[int, bytes]], total: int) -> SendResult:
    """Some recipients took the mail: a retry would send it to them again, so it is not retried."""
    which = "; ".join(f"{address}: {_reply(*reply)}" for address, reply in refused.items())
    return SendResult(ok=False, error=f"sent to {total - len(refused)} of {total}; refused {which}", retry=False)


def _failure(exc: BaseException) -> SendResult:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        which = "; ".join(f"{address}: {_reply(*reply)}" for address, reply in exc.recipients.items())
        transient = any(not _permanent(code) for code, _ in exc.recipients.values())
        return SendResult(ok=False, error=f"every recipient refused: {which}", retry=transient)
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        reply = _reply(exc.smtp_code, exc.smtp_error)  # 535: wrong credentials; 454: try later
        return SendResult(ok=False, error=f"login refused: {reply}", retry=not _permanent(exc.smtp_code))
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return SendResult(ok=False, error=f"the server does not support this: {exc}", retry=False)
    if isinstance(exc, smtplib.SMTPConnectError | smtplib.SMTPServerDisconnected):
        return SendResult(ok=False, error=f"connection failed: {exc}", retry=True)
    if isinstance(exc, smtplib.SMTPResponseException):
        reply = _reply(exc.smtp_code, exc.smtp_error)
        return SendResult(ok=False, error=f"server refused: {reply}", retry=not _permanent(exc.smtp_code))
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SendResult(ok=False, error=f"TLS certificate not trusted: {exc.verify_message}", retry=False)
    if isinstance(exc, OSError):
        return SendResult(ok=False, error=f"{type(exc).__name__}: {exc}", retry=True)
    return SendResult(ok=False, error=f"{type(exc).__name__}: {exc}", retry=True)
