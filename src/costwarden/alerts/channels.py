"""Sending one alert to one channel: the I/O edge of alerting.

:meth:`Sender.send` makes one attempt and says how it went (:class:`Attempt`); whether and
when to try again is the caller's (the delivery worker, with
:func:`costwarden.alerts.delivery.next_attempt_at`). ``send`` never raises for a failed
delivery, so one bad channel cannot take the worker down with it.

- **webhook**: a POST signed per Standard Webhooks (standardwebhooks.com): the body is
  ``{"type": "alert.<kind>", "timestamp": <created_at>, "data": <the message>}``, made once as
  bytes and signed as sent; ``webhook-id`` is the message id, the same on every retry, so a
  receiver can drop a repeat. ``timestamp`` is when the alert was raised (the spec's "when
  the event occurred"), so a retry carries the same body; ``webhook-timestamp`` is when this
  attempt was signed, which receivers check against replays.
- **slack**: a POST of :func:`costwarden.alerts.delivery.slack_payload` to the incoming-webhook
  URL.
- **email**: one message through the channel's SMTP server (aiosmtplib), with STARTTLS
  required, TLS from the start, or neither, as the channel says; never a silent downgrade.

HTTP 2xx is delivered. Connection errors, timeouts, 408, 429 and 5xx may pass, so they are
retryable; any other answer (other 4xx, and 3xx: redirects are not followed, since a signed
alert must not be forwarded to wherever a receiver points) will be the same next time. SMTP:
4xx replies, dropped connections and timeouts are retryable, 5xx replies permanent.

Every attempt is bounded by the Sender's ``timeout``, from connecting (and name resolution)
to the last byte of the answer, so a channel that is slow or silent holds only its own
delivery; the others proceed concurrently on the same session.

Channel URLs, secrets and passwords are credentials (a Slack URL's path is one). Exception
messages may quote them (aiohttp's name the host and port, yarl's the whole URL), so failures
are reported and logged by exception class and status code only, never by message or
traceback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
import socket
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate
from typing import Final

import aiohttp
import aiosmtplib
import orjson
from standardwebhooks import Webhook

from costwarden.alerts.delivery import email_content, slack_payload, validate_channel
from costwarden.alerts.model import AlertMessage, Channel, EmailSettings
from costwarden.core.errors import InvalidInput

__all__ = ["Attempt", "Sender"]

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS: Final = 10.0
_USER_AGENT: Final = "costwarden-alerts"
_SMTP_DELIVERED: Final = 250  # the reply to the end of DATA that aiosmtplib takes as sent
_NOT_MSGID: Final = re.compile(r"[^A-Za-z0-9._-]")


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """How one attempt went. ``error`` is safe to store and log: an exception's class or
    ``HTTP <status>``, never a message that could quote a URL, secret or password."""

    delivered: bool
    status: int | None  # HTTP status or SMTP reply code; None when no answer came
    error: str | None
    retryable: bool


class Sender:
    """Sends alerts over one HTTP session (made on first use) and one SMTP connection per
    e-mail. Belongs to one event loop; :meth:`aclose` it when done."""

    __slots__ = ("_timeout", "_session", "_local_hostname")

    def __init__(self, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"timeout must be a number of seconds, got {timeout!r}")
        if not math.isfinite(timeout) or timeout <= 0:
            raise ValueError(f"timeout must be above 0 seconds, got {timeout!r}")
        self._timeout = float(timeout)
        self._session: aiohttp.ClientSession | None = None
        self._local_hostname: asyncio.Future[str] | None = None

    async def send(self, channel: Channel, message: AlertMessage) -> Attempt:
        """One attempt to deliver ``message`` to ``channel``, within the timeout. Sends to a
        disabled channel too: which channels take an alert is the caller's decision."""
        try:
            validate_channel(channel)
        except InvalidInput as exc:
            # validate_channel's messages name fields, never values: safe to log
            logger.warning(
                "alert %s not sent to channel %s (%s): %s",
                message.message_id,
                channel.id,
                channel.type,
                exc,
            )
            return Attempt(delivered=False, status=None, error="InvalidInput", retryable=False)
        try:
            async with asyncio.timeout(self._timeout):
                attempt = await self._deliver(channel, message)
        except Exception as exc:  # every failure becomes an Attempt (CancelledError is not one)
            attempt = _failure(exc)
        if attempt.delivered:
            logger.info(
                "alert %s delivered to channel %s (%s)",
                message.message_id,
                channel.id,
                channel.type,
            )
        else:
            logger.warning(
                "alert %s to channel %s (%s) failed: %s (%s)",
                message.message_id,
                channel.id,
                channel.type,
                attempt.error,
                "will retry" if attempt.retryable else "permanent",
            )
        return attempt

    async def aclose(self) -> None:
        """Close the HTTP session; a later :meth:`send` opens a new one."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        lookup, self._local_hostname = self._local_hostname, None
        if lookup is not None and not lookup.done():
            lookup.cancel()

    async def _deliver(self, channel: Channel, message: AlertMessage) -> Attempt:
        # validate_channel has vouched for the fields each type needs
        if channel.type == "webhook":
            assert channel.url is not None and channel.secret is not None
            return await self._post(channel.url, *_webhook_request(channel.secret, message))
        if channel.type == "slack":
            assert channel.url is not None
            body = orjson.dumps(slack_payload(message))
            return await self._post(channel.url, body, {"content-type": "application/json"})
        assert channel.email is not None
        return await self._email(channel.email, message)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                # a receiver's cookies must not travel to the next receiver
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"user-agent": _USER_AGENT},
                trust_env=False,
            )
        return self._session

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> Attempt:
        async with self._http().post(
            url, data=body, headers=headers, allow_redirects=False
        ) as response:
            status = response.status
        if 200 <= status < 300:
            return Attempt(delivered=True, status=status, error=None, retryable=False)
        retryable = status in (408, 429) or status >= 500
        return Attempt(delivered=False, status=status, error=f"HTTP {status}", retryable=retryable)

    async def _email(self, settings: EmailSettings, message: AlertMessage) -> Attempt:
        email = _email_message(settings, message)
        refused, _ = await aiosmtplib.send(
            email,
            sender=settings.sender,
            recipients=list(settings.to),
            hostname=settings.host,
            port=settings.port,
            username=settings.username,
            password=settings.password,
            use_tls=settings.security == "tls",
            # False, not None: None would upgrade only if the server offers it, so a
            # "starttls" channel could go out in the clear and a "none" one not quite none
            start_tls=settings.security == "starttls",
            timeout=self._timeout,
            local_hostname=await self._hostname(),
        )
        if refused:
            # Some recipients took it: delivered. A retry would send it again to those.
            logger.warning(
                "alert %s: %d of %d recipients refused it (codes %s)",
                message.message_id,
                len(refused),
                len(settings.to),
                ", ".join(sorted({str(reply.code) for reply in refused.values()})),
            )
        return Attempt(delivered=True, status=_SMTP_DELIVERED, error=None, retryable=False)

    async def _hostname(self) -> str:
        """This host's name for EHLO, looked up once in a thread: ``socket.getfqdn`` may
        wait on DNS, and aiosmtplib before 4.0 called it on the event loop. Shielded, so an
        attempt that times out leaves the look-up to finish for the next one."""
        if self._local_hostname is None:
            self._local_hostname = asyncio.ensure_future(asyncio.to_thread(socket.getfqdn))
        return await asyncio.shield(self._local_hostname)


def _webhook_request(secret: str, message: AlertMessage) -> tuple[bytes, dict[str, str]]:
    body = orjson.dumps(
        {
            "type": f"alert.{message.kind}",
            "timestamp": message.created_at,
            "data": message.payload(),
        }
    )
    now = int(time.time())
    # standardwebhooks signs text; orjson's bytes are UTF-8, so this is the body as sent
    signature = Webhook(secret).sign(
        message.message_id, datetime.fromtimestamp(now, UTC), body.decode()
    )
    headers = {
        "content-type": "application/json",
        "webhook-id": message.message_id,
        "webhook-timestamp": str(now),
        "webhook-signature": signature,
    }
    return body, headers


def _email_message(settings: EmailSettings, message: AlertMessage) -> EmailMessage:
    subject, body = email_content(message)
    email = EmailMessage()
    email["Subject"] = subject
    email["From"] = settings.sender
    email["To"] = ", ".join(settings.to)
    email["Date"] = formatdate(usegmt=True)
    # The same Message-ID on every retry, so a mail client shows a repeat once.
    domain = settings.sender.rpartition("@")[2]
    email["Message-ID"] = f"<{_NOT_MSGID.sub('-', message.message_id)}.alert@{domain}>"
    # RFC 3834: no vacation replies or bounces-to-bounces for a machine's message
    email["Auto-Submitted"] = "auto-generated"
    email.set_content(body)
    return email


def _failure(exc: Exception) -> Attempt:
    """The attempt an exception ended, by its class (and SMTP code): see the module doc for
    what is retryable. Order matters: several classes derive from more than one of these."""
    name = type(exc).__name__
    if isinstance(exc, TimeoutError):  # asyncio's, aiohttp's and aiosmtplib's timeouts
        return Attempt(delivered=False, status=None, error=name, retryable=True)
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refusal.code for refusal in exc.recipients]
        code = min(codes, default=None)  # a 4xx among them: worth another try
        return _smtp_reply(name, code)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _smtp_reply(name, exc.code)
    if isinstance(exc, aiohttp.InvalidURL):
        return Attempt(delivered=False, status=None, error=name, retryable=False)
    if isinstance(exc, aiohttp.ClientError | OSError):  # refused, reset, DNS, TLS, dropped
        return Attempt(delivered=False, status=None, error=name, retryable=True)
    if isinstance(exc, aiosmtplib.SMTPException):  # e.g. STARTTLS or AUTH not offered
        return Attempt(delivered=False, status=None, error=name, retryable=False)
    # Not a delivery failure we know: a bug, most likely. Logged by class only, like the
    # rest (its message could quote a URL); not retried, since it would fail the same way.
    logger.error("alert delivery raised an unexpected %s", name)
    return Attempt(delivered=False, status=None, error=name, retryable=False)


def _smtp_reply(name: str, code: int | None) -> Attempt:
    status = code if code is not None and 100 <= code <= 599 else None
    error = name if status is None else f"{name} {status}"
    # 5xx: the server refuses for good. 4xx, or a reply that was no SMTP code: try again.
    retryable = status is None or status < 500
    return Attempt(delivered=False, status=status, error=error, retryable=retryable)


async def send_check(
    channel: Channel, *, message_id: str, created_at: str, timeout: float
) -> Attempt:
    """Send ``channel`` a check message now, on a sender of its own: "can alerts reach this
    channel?" (``costwarden alerts test``, ``POST /admin/alert-channels/{name}/test``)."""
    message = AlertMessage(
        message_id=message_id,
        alert_id="test",
        kind="test",
        rule="test",
        severity="info",
        state="firing",
        title=f"costwarden test message to channel {channel.name}",
        text="If you can read this, alerts reach this channel.",
        created_at=created_at,
    )
    sender = Sender(timeout=timeout)
    try:
        return await sender.send(channel, message)
    finally:
        await sender.aclose()
