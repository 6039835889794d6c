"""The senders against real servers on 127.0.0.1: an aiohttp receiver that verifies every
webhook's Standard Webhooks signature, a port nobody listens on, a server that never
answers, and aiosmtpd for e-mail. What is retried, what is not, and that no URL path,
secret or password reaches an Attempt or a log line."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email
import email.policy
import logging
import time
from collections.abc import AsyncIterator, Iterator
from email.message import EmailMessage

import orjson
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from costwarden.alerts.channels import Attempt, Sender
from costwarden.alerts.delivery import slack_payload
from costwarden.alerts.model import AlertMessage, Channel, EmailSettings
from tests.helpers import free_port

SECRET = "whsec_" + base64.b64encode(b"channels-test-key-0123456789abcdef").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"someone-else-s-key-0123456789").decode()
SLACK_PATH = "/services/T0SECRET/B0SECRET/slackTokenSecret42"
USERNAME, PASSWORD = "costwarden", "smtp-password-hunter2"
LEAKS = (SECRET, SECRET.removeprefix("whsec_"), SLACK_PATH, "slackTokenSecret42", PASSWORD)

MESSAGE = AlertMessage(
    message_id="dlv_01",
    alert_id="al_01",
    kind="threshold",
    rule="budget-80",
    severity="critical",
    state="firing",
    title="Org acme: daily USD budget at 80 %",
    text="acme has spent 4 of 5 USD today.",
    created_at="2026-12-01T21:10:19+00:00",
    org_id="org_acme",
    scope="org",
    scope_id="org_acme",
    metric="usd",
    spent="4",
    limit="5",
    percent="80",
)


# -- an HTTP receiver ----------------------------------------------------------------------


@dataclasses.dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """Answers ``status`` to every request and keeps what came. On ``/hook`` it checks the
    Standard Webhooks signature first, as a real receiver would, and answers 401 without a
    good one: a delivered webhook is a verified one."""

    def __init__(self) -> None:
        self.status = 200
        self.received: list[Received] = []
        self.verified: list[object] = []
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = dict(request.headers)
        self.received.append(Received(request.path, headers, body))
        if request.path == "/hook":
            try:
                self.verified.append(Webhook(SECRET).verify(body, headers))
            except WebhookVerificationError:
                return web.Response(status=401)
        return web.Response(status=self.status, text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_route("POST", "/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)  # its access log would show the paths
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.port = runner.addresses[0][1]
    yield receiver
    await runner.cleanup()


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A server that takes connections and never says a word (HTTP or SMTP)."""
    writers: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()  # until the client gives up

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    for writer in writers:
        writer.close()
    await server.wait_closed()


@pytest.fixture
async def sender() -> AsyncIterator[Sender]:
    sender = Sender(timeout=2.0)
    yield sender
    await sender.aclose()


def _webhook(url: str, secret: str = SECRET) -> Channel:
    return Channel(id="ch_hook", name="ops hook", type="webhook", url=url, secret=secret)


def _slack(url: str) -> Channel:
    return Channel(id="ch_slack", name="ops slack", type="slack", url=url)


# The test servers' own loggers: they log peers and paths, as servers do; they are not ours.
_SERVER_LOGGERS = ("mail.log", "aiohttp.access", "aiohttp.server", "aiohttp.web")


@pytest.fixture(autouse=True)
def _log_everything(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


def _assert_no_leak(caplog: pytest.LogCaptureFixture, *attempts: Attempt) -> None:
    """Neither a log line of the sending side (ours, aiohttp's client, aiosmtplib, asyncio)
    nor an Attempt's error quotes a secret, password, Slack path or the receiver's address."""
    assert any(r.name == "costwarden.alerts.channels" for r in caplog.records)
    for record in caplog.records:
        if record.name.startswith(_SERVER_LOGGERS):
            continue
        text = record.getMessage() + (record.exc_text or "")
        for leak in (*LEAKS, "127.0.0.1"):
            assert leak not in text, (leak, text)
    for attempt in attempts:
        for leak in (*LEAKS, "127.0.0.1", "http"):
            assert attempt.error is None or leak not in attempt.error, (leak, attempt)


# -- webhooks ------------------------------------------------------------------------------


async def test_a_webhook_arrives_signed_per_standard_webhooks(
    receiver: Receiver, sender: Sender, caplog: pytest.LogCaptureFixture
) -> None:
    before = int(time.time())
    attempt = await sender.send(_webhook(receiver.url("/hook")), MESSAGE)
    assert attempt == Attempt(delivered=True, status=200, error=None, retryable=False)
    (request,) = receiver.received
    assert receiver.verified == [orjson.loads(request.body)]  # the receiver checked it
    assert orjson.loads(request.body) == {
        "type": "alert.threshold",
        "timestamp": "2026-12-01T21:10:19+00:00",
        "data": MESSAGE.payload(),
    }
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["webhook-id"] == "dlv_01"
    assert headers["content-type"] == "application/json"
    assert headers["webhook-signature"].startswith("v1,")
    assert before <= int(headers["webhook-timestamp"]) <= int(time.time())
    _assert_no_leak(caplog, attempt)


async def test_a_tampered_body_or_another_secret_fails_verification(
    receiver: Receiver, sender: Sender
) -> None:
    assert (await sender.send(_webhook(receiver.url("/hook")), MESSAGE)).delivered
    (request,) = receiver.received
    Webhook(SECRET).verify(request.body, request.headers)  # as sent: good
    tampered = request.body.replace(b'"spent":"4"', b'"spent":"0"')
    assert tampered != request.body
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, request.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(OTHER_SECRET).verify(request.body, request.headers)
    # and a receiver with another secret refuses the delivery: 401, which no retry mends
    attempt = await sender.send(_webhook(receiver.url("/hook"), OTHER_SECRET), MESSAGE)
    assert attempt == Attempt(delivered=False, status=401, error="HTTP 401", retryable=False)


async def test_every_retry_carries_the_same_id_and_body(receiver: Receiver, sender: Sender) -> None:
    for _ in range(2):
        assert (await sender.send(_webhook(receiver.url("/hook")), MESSAGE)).delivered
    first, second = receiver.received
    assert first.body == second.body
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == "dlv_01"
    assert len(receiver.verified) == 2


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (503, True), (429, True), (408, True), (400, False), (404, False), (410, False)],
)
async def test_what_a_failing_receiver_answers_decides_the_retry(
    receiver: Receiver,
    sender: Sender,
    caplog: pytest.LogCaptureFixture,
    status: int,
    retryable: bool,
) -> None:
    receiver.status = status
    attempt = await sender.send(_webhook(receiver.url("/hook")), MESSAGE)
    assert attempt == Attempt(
        delivered=False, status=status, error=f"HTTP {status}", retryable=retryable
    )
    assert len(receiver.verified) == 1  # it was signed all the same
    _assert_no_leak(caplog, attempt)


async def test_a_redirect_is_not_followed(receiver: Receiver, sender: Sender) -> None:
    receiver.status = 307
    attempt = await sender.send(_webhook(receiver.url("/hook")), MESSAGE)
    assert attempt == Attempt(delivered=False, status=307, error="HTTP 307", retryable=False)
    assert len(receiver.received) == 1


async def test_a_closed_port_is_retryable_with_no_status(
    sender: Sender, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # bound and released: nothing listens there
    attempt = await sender.send(_webhook(f"http://127.0.0.1:{port}/hook"), MESSAGE)
    assert (attempt.delivered, attempt.status, attempt.retryable) == (False, None, True)
    assert attempt.error == "ClientConnectorError"
    _assert_no_leak(caplog, attempt)


async def test_a_receiver_that_never_answers_times_out_and_holds_no_one_else(
    receiver: Receiver, silent_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    sender = Sender(timeout=0.5)
    done: dict[str, float] = {}

    async def timed(name: str, channel: Channel) -> Attempt:
        attempt = await sender.send(channel, MESSAGE)
        done[name] = time.monotonic() - started
        return attempt

    try:
        started = time.monotonic()
        silent, good = await asyncio.gather(
            timed("silent", _webhook(f"http://127.0.0.1:{silent_port}/hook")),
            timed("good", _webhook(receiver.url("/hook"))),
        )
    finally:
        await sender.aclose()
    assert silent == Attempt(delivered=False, status=None, error="TimeoutError", retryable=True)
    assert 0.5 <= done["silent"] < 1.5
    assert good.delivered and done["good"] < 0.4  # not behind the silent one
    _assert_no_leak(caplog, silent)


# -- Slack ---------------------------------------------------------------------------------


async def test_slack_gets_its_payload_as_json(
    receiver: Receiver, sender: Sender, caplog: pytest.LogCaptureFixture
) -> None:
    attempt = await sender.send(_slack(receiver.url(SLACK_PATH)), MESSAGE)
    assert attempt == Attempt(delivered=True, status=200, error=None, retryable=False)
    (request,) = receiver.received
    assert request.path == SLACK_PATH
    assert request.headers["Content-Type"] == "application/json"
    payload = orjson.loads(request.body)
    assert payload == slack_payload(MESSAGE)
    assert payload["text"].startswith("CRITICAL: Org acme")
    assert "webhook-signature" not in {k.lower() for k in request.headers}
    _assert_no_leak(caplog, attempt)


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (429, True), (404, False)])
async def test_a_failing_slack_url_is_never_quoted(
    receiver: Receiver,
    sender: Sender,
    caplog: pytest.LogCaptureFixture,
    status: int,
    retryable: bool,
) -> None:
    receiver.status = status
    attempt = await sender.send(_slack(receiver.url(SLACK_PATH)), MESSAGE)
    assert (attempt.delivered, attempt.status, attempt.retryable) == (False, status, retryable)
    _assert_no_leak(caplog, attempt)


async def test_an_invalid_channel_is_not_sent_and_not_retried(
    sender: Sender, caplog: pytest.LogCaptureFixture
) -> None:
    channel = _slack("ftp://hooks.slack.com" + SLACK_PATH)
    attempt = await sender.send(channel, MESSAGE)
    assert attempt == Attempt(delivered=False, status=None, error="InvalidInput", retryable=False)
    assert "invalid URL" in caplog.text
    _assert_no_leak(caplog, attempt)


# -- e-mail --------------------------------------------------------------------------------


class Mailbox:
    """An aiosmtpd handler: keeps what it accepts, or refuses at RCPT (every recipient, or
    only those in ``refused``) or at DATA when told."""

    def __init__(
        self,
        *,
        rcpt_reply: str | None = None,
        data_reply: str | None = None,
        refused: tuple[str, ...] = (),
    ) -> None:
        self.rcpt_reply = rcpt_reply
        self.data_reply = data_reply
        self.refused = refused
        self.messages: list[Envelope] = []

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.rcpt_reply is not None and (not self.refused or address in self.refused):
            return self.rcpt_reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply is not None:
            return self.data_reply
        self.messages.append(envelope)
        return "250 Message accepted for delivery"


def _authenticate(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: object
) -> AuthResult:
    good = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        USERNAME.encode(),
        PASSWORD.encode(),
    )
    # handled=False: aiosmtpd answers 535 itself (handled=True would leave it to us)
    return AuthResult(success=good, handled=False)


def _smtp(mailbox: Mailbox) -> Iterator[Controller]:
    controller = Controller(
        mailbox,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=_authenticate,
        auth_require_tls=False,  # a test server without TLS still takes a password
    )
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox()


@pytest.fixture
def smtp(mailbox: Mailbox) -> Iterator[Controller]:
    yield from _smtp(mailbox)


def _email(port: int, **changes: object) -> Channel:
    settings = EmailSettings(
        to=("oncall@example.com", "finance@example.com"),
        sender="costwarden@example.com",
        host="127.0.0.1",
        port=port,
        security="none",
    )
    settings = dataclasses.replace(settings, **changes)  # type: ignore[arg-type]
    return Channel(id="ch_mail", name="ops mail", type="email", email=settings)


async def test_an_email_arrives_with_subject_and_body(
    smtp: Controller, mailbox: Mailbox, sender: Sender, caplog: pytest.LogCaptureFixture
) -> None:
    attempt = await sender.send(_email(smtp.port), MESSAGE)
    assert attempt == Attempt(delivered=True, status=250, error=None, retryable=False)
    (envelope,) = mailbox.messages
    assert envelope.mail_from == "costwarden@example.com"
    assert envelope.rcpt_tos == ["oncall@example.com", "finance@example.com"]
    assert isinstance(envelope.content, bytes)
    mail = email.message_from_bytes(envelope.content, policy=email.policy.default)
    assert isinstance(mail, EmailMessage)
    assert mail["Subject"] == "[costwarden] CRITICAL: Org acme: daily USD budget at 80 %"
    assert mail["Message-ID"] == "<dlv_01.alert@example.com>"
    assert mail["Auto-Submitted"] == "auto-generated"
    body = mail.get_body(("plain",))
    assert body is not None
    assert "acme has spent 4 of 5 USD today." in body.get_content()
    assert "Spent:   4 usd" in body.get_content().splitlines()
    _assert_no_leak(caplog, attempt)


async def test_an_email_with_a_login_authenticates_and_a_wrong_password_is_permanent(
    smtp: Controller, mailbox: Mailbox, sender: Sender, caplog: pytest.LogCaptureFixture
) -> None:
    good = await sender.send(_email(smtp.port, username=USERNAME, password=PASSWORD), MESSAGE)
    assert good.delivered and len(mailbox.messages) == 1
    wrong = "not-the-" + PASSWORD
    bad = await sender.send(_email(smtp.port, username=USERNAME, password=wrong), MESSAGE)
    assert bad == Attempt(
        delivered=False, status=535, error="SMTPAuthenticationError 535", retryable=False
    )
    assert len(mailbox.messages) == 1
    assert wrong not in caplog.text
    _assert_no_leak(caplog, good, bad)


@pytest.mark.parametrize(
    ("mailbox", "attempt"),
    [
        (
            Mailbox(data_reply="550 5.7.1 Message rejected"),
            Attempt(False, 550, "SMTPDataError 550", retryable=False),
        ),
        (
            Mailbox(rcpt_reply="550 5.1.1 No such user"),
            Attempt(False, 550, "SMTPRecipientsRefused 550", retryable=False),
        ),
        (
            Mailbox(data_reply="451 4.3.0 Try again later"),
            Attempt(False, 451, "SMTPDataError 451", retryable=True),
        ),
        (
            Mailbox(rcpt_reply="452 4.2.2 Mailbox full"),
            Attempt(False, 452, "SMTPRecipientsRefused 452", retryable=True),
        ),
    ],
    ids=["data-550", "rcpt-550", "data-451", "rcpt-452"],
)
async def test_smtp_5xx_is_permanent_and_4xx_retryable(
    smtp: Controller,
    mailbox: Mailbox,
    sender: Sender,
    attempt: Attempt,
    caplog: pytest.LogCaptureFixture,
) -> None:
    got = await sender.send(_email(smtp.port, username=USERNAME, password=PASSWORD), MESSAGE)
    assert got == attempt
    assert mailbox.messages == []
    _assert_no_leak(caplog, got)


@pytest.mark.parametrize(
    "mailbox", [Mailbox(rcpt_reply="550 5.1.1 No such user", refused=("finance@example.com",))]
)
async def test_an_email_some_recipients_took_is_delivered(
    smtp: Controller, mailbox: Mailbox, sender: Sender, caplog: pytest.LogCaptureFixture
) -> None:
    attempt = await sender.send(_email(smtp.port), MESSAGE)
    # delivered: a retry would send it again to those who have it
    assert attempt == Attempt(delivered=True, status=250, error=None, retryable=False)
    (envelope,) = mailbox.messages
    assert envelope.rcpt_tos == ["oncall@example.com"]
    assert "1 of 2 recipients refused it (codes 550)" in caplog.text


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_an_email_that_must_be_encrypted_never_goes_out_in_the_clear(
    smtp: Controller, mailbox: Mailbox, sender: Sender, security: str
) -> None:
    # aiosmtpd here offers no STARTTLS and speaks no TLS
    channel = _email(smtp.port, security=security, username=USERNAME, password=PASSWORD)
    attempt = await sender.send(channel, MESSAGE)
    assert not attempt.delivered and attempt.status is None
    if security == "starttls":  # the server offers no STARTTLS: it will not start to
        assert attempt == Attempt(False, None, "SMTPException", retryable=False)
    assert mailbox.messages == []


async def test_an_smtp_server_that_is_down_or_silent_is_retryable(
    silent_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    sender = Sender(timeout=0.3)
    try:
        refused = await sender.send(_email(free_port()), MESSAGE)
        started = time.monotonic()
        silent = await sender.send(_email(silent_port), MESSAGE)
        elapsed = time.monotonic() - started
    finally:
        await sender.aclose()
    assert (refused.delivered, refused.status, refused.retryable) == (False, None, True)
    assert (silent.delivered, silent.status, silent.retryable) == (False, None, True)
    assert silent.error is not None and "Timeout" in silent.error
    assert 0.3 <= elapsed < 1.3
    _assert_no_leak(caplog, refused, silent)
