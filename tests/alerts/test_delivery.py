"""Delivery policy, as tables: the retry schedule, channel filters, validation that never
quotes a URL path or a secret, redaction, and what Slack and e-mail receive."""

from __future__ import annotations

import base64
import dataclasses
import math

import orjson
import pytest

from costwarden.alerts.delivery import (
    MAX_DELAY_SECONDS,
    RETRY_WINDOW_SECONDS,
    email_content,
    matches,
    next_attempt_at,
    redacted,
    redacted_url,
    retry_delays,
    slack_payload,
    validate_channel,
)
from costwarden.alerts.model import AlertMessage, Channel, ChannelFilter, EmailSettings, Severity
from costwarden.core.errors import InvalidInput

T0 = 1_700_000_000.0
SECRET = "whsec_" + base64.b64encode(b"delivery-test-key-0123456789abcdef").decode()
SLACK_PATH = "/services/T0SECRET/B0SECRET/slackTokenSecret42"
SLACK_URL = "https://hooks.slack.com" + SLACK_PATH
PASSWORD = "smtp-password-hunter2"

WEBHOOK = Channel(
    id="ch_1",
    name="ops hook",
    type="webhook",
    url="https://hooks.example.com/in?token=t0k3n",
    secret=SECRET,
)
SLACK = Channel(id="ch_2", name="ops slack", type="slack", url=SLACK_URL)
MAIL = EmailSettings(
    to=("oncall@example.com", "finance@example.com"),
    sender="costwarden@example.com",
    host="smtp.example.com",
    port=587,
    username="costwarden",
    password=PASSWORD,
)
EMAIL = Channel(id="ch_3", name="ops mail", type="email", email=MAIL)

MESSAGE = AlertMessage(
    message_id="dlv_1",
    alert_id="al_1",
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
    limit_name="daily-usd",
    metric="usd",
    threshold_pct=80,
    spent="4",
    reserved="0.25",
    limit="5",
    percent="85",
    resets_at="2026-12-02T00:00:00+00:00",
    dashboard_url="https://costwarden.example.com/orgs/org_acme?x=1&y=2",
)


# -- the retry schedule --------------------------------------------------------------------

DEFAULT_DELAYS = (10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0, 1280.0, 2560.0) + (3600.0,) * 22


def test_the_default_delays_double_from_10_s_to_an_hour_for_a_day() -> None:
    assert retry_delays() == DEFAULT_DELAYS
    assert sum(DEFAULT_DELAYS) == 84_310  # the last attempt: 23 h 25 min 10 s after the first


@pytest.mark.parametrize(
    ("attempts_made", "after"),
    [
        (0, 0.0),  # the first attempt: at once
        (1, 10.0),
        (2, 30.0),
        (3, 70.0),
        (9, 5110.0),  # 10 + 20 + ... + 2560
        (10, 8710.0),  # the first wait of an hour
        (11, 12_310.0),
        (31, 84_310.0),  # the last attempt
        (32, None),  # the next would be at 87,910 s, past the day: dead letter
        (100, None),
    ],
)
def test_next_attempt_at(attempts_made: int, after: float | None) -> None:
    expected = None if after is None else T0 + after
    assert next_attempt_at(attempts_made, T0) == expected


@pytest.mark.parametrize(
    ("base", "first", "count"),
    [
        (0.5, (0.5, 1.0, 2.0, 4.0), 35),  # 0.5 .. 2048 (13, 4095.5 s), then 22 of an hour
        (1.0, (1.0, 2.0, 4.0), 34),  # 1 .. 2048 (12, 4095 s), then 22 of an hour
        (60.0, (60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0), 28),  # 6, then 22
        (5000.0, (3600.0, 3600.0), 24),  # capped from the first: 24 h exactly
    ],
)
def test_the_base_sets_the_first_wait_and_the_cap_and_the_day_still_hold(
    base: float, first: tuple[float, ...], count: int
) -> None:
    delays = retry_delays(base=base)
    assert delays[: len(first)] == first
    assert len(delays) == count
    assert max(delays) <= MAX_DELAY_SECONDS
    assert sum(delays) <= RETRY_WINDOW_SECONDS < sum(delays) + MAX_DELAY_SECONDS
    assert next_attempt_at(1, T0, base=base) == T0 + first[0]
    assert next_attempt_at(count, T0, base=base) == T0 + sum(delays)
    assert next_attempt_at(count + 1, T0, base=base) is None


def test_an_attempt_at_exactly_24_hours_is_still_made() -> None:
    assert next_attempt_at(24, T0, base=3600.0) == T0 + RETRY_WINDOW_SECONDS
    assert next_attempt_at(25, T0, base=3600.0) is None


@pytest.mark.parametrize("base", [0.0, -1.0, math.nan, math.inf])
def test_a_base_must_be_a_positive_number(base: float) -> None:
    with pytest.raises(ValueError, match="base"):
        next_attempt_at(1, T0, base=base)
    with pytest.raises(ValueError, match="base"):
        retry_delays(base=base)


def test_attempts_made_cannot_be_negative() -> None:
    with pytest.raises(ValueError, match="attempts_made"):
        next_attempt_at(-1, T0)


# -- filters -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filter", "severity", "org_id", "kind", "expected"),
    [
        (ChannelFilter(), "info", None, "service", True),  # empty: everything
        (ChannelFilter(), "critical", "org_a", "threshold", True),
        (ChannelFilter(min_severity="warning"), "info", "org_a", "threshold", False),
        (ChannelFilter(min_severity="warning"), "warning", "org_a", "threshold", True),
        (ChannelFilter(min_severity="warning"), "critical", "org_a", "threshold", True),
        (ChannelFilter(min_severity="critical"), "warning", "org_a", "threshold", False),
        (ChannelFilter(min_severity="critical"), "critical", "org_a", "threshold", True),
        (ChannelFilter(org_ids=("org_a", "org_b")), "info", "org_b", "spike", True),
        (ChannelFilter(org_ids=("org_a",)), "info", "org_c", "spike", False),
        (ChannelFilter(org_ids=("org_a",)), "critical", None, "service", False),
        (ChannelFilter(kinds=("threshold", "forecast")), "info", "org_a", "forecast", True),
        (ChannelFilter(kinds=("threshold",)), "info", "org_a", "spike", False),
        (
            ChannelFilter(min_severity="warning", org_ids=("org_a",), kinds=("threshold",)),
            "warning",
            "org_a",
            "threshold",
            True,
        ),
        (
            ChannelFilter(min_severity="warning", org_ids=("org_a",), kinds=("threshold",)),
            "info",
            "org_a",
            "threshold",
            False,
        ),
    ],
)
def test_matches(
    filter: ChannelFilter, severity: Severity, org_id: str | None, kind: str, expected: bool
) -> None:
    assert matches(filter, severity=severity, org_id=org_id, kind=kind) is expected


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "channel",
    [
        WEBHOOK,
        dataclasses.replace(WEBHOOK, secret=SECRET.removeprefix("whsec_")),  # plain base64
        dataclasses.replace(WEBHOOK, secret="whsec_" + SECRET[6:].rstrip("=")),  # unpadded
        dataclasses.replace(WEBHOOK, url="http://127.0.0.1:8080/hook"),
        dataclasses.replace(WEBHOOK, url="https://[::1]/hook"),
        SLACK,
        EMAIL,
        dataclasses.replace(
            EMAIL,
            email=dataclasses.replace(MAIL, port=25, security="none", username=None, password=None),
        ),
        dataclasses.replace(EMAIL, email=dataclasses.replace(MAIL, port=465, security="tls")),
    ],
)
def test_valid_channels_pass(channel: Channel) -> None:
    validate_channel(channel)


def _mail(**changes: object) -> Channel:
    return dataclasses.replace(EMAIL, email=dataclasses.replace(MAIL, **changes))  # type: ignore[arg-type]


BAD_CHANNELS = [
    pytest.param(
        dataclasses.replace(WEBHOOK, type="sms"),  # type: ignore[arg-type]
        "unknown channel type",
        id="type",
    ),
    pytest.param(dataclasses.replace(SLACK, name="  "), "name", id="empty-name"),
    pytest.param(dataclasses.replace(SLACK, url=None), "invalid URL", id="no-url"),
    pytest.param(dataclasses.replace(SLACK, url="not a url"), "invalid URL", id="not-a-url"),
    pytest.param(
        dataclasses.replace(SLACK, url="ftp://hooks.slack.com" + SLACK_PATH),
        "invalid URL",
        id="ftp",
    ),
    pytest.param(dataclasses.replace(SLACK, url="http://"), "invalid URL", id="no-host"),
    pytest.param(
        dataclasses.replace(SLACK, url="https://" + SLACK_PATH), "invalid URL", id="path-only"
    ),
    pytest.param(
        dataclasses.replace(SLACK, url="https://hooks.slack.com:99999" + SLACK_PATH),
        "invalid URL",
        id="bad-port",
    ),
    pytest.param(
        dataclasses.replace(SLACK, url="https://hooks.slack.com" + SLACK_PATH + "\n"),
        "invalid URL",
        id="line-break",  # urlsplit would drop it silently
    ),
    pytest.param(
        dataclasses.replace(SLACK, url="https://hooks slack.com" + SLACK_PATH),
        "invalid URL",
        id="space-in-host",
    ),
    pytest.param(
        dataclasses.replace(WEBHOOK, url="webhook.example.com/in?token=t0k3n"),
        "invalid URL",
        id="no-scheme",
    ),
    pytest.param(dataclasses.replace(WEBHOOK, secret=None), "needs a secret", id="no-secret"),
    pytest.param(
        dataclasses.replace(WEBHOOK, secret="whsec_" + SECRET[6:] + "!"),
        "secret: invalid",
        id="not-base64",
    ),
    pytest.param(dataclasses.replace(WEBHOOK, secret="whsec_"), "secret: invalid", id="empty-key"),
    pytest.param(
        dataclasses.replace(WEBHOOK, secret="whsec_" + PASSWORD),
        "secret: invalid",
        id="not-base64-either",
    ),
    pytest.param(
        dataclasses.replace(WEBHOOK, filter=ChannelFilter(min_severity="loud")),  # type: ignore[arg-type]
        "min_severity",
        id="filter-severity",
    ),
    pytest.param(
        dataclasses.replace(WEBHOOK, filter=ChannelFilter(org_ids=("",))),
        "org_ids",
        id="filter-org",
    ),
    pytest.param(dataclasses.replace(EMAIL, email=None), "email settings", id="no-email"),
    pytest.param(_mail(to=()), "at least one recipient", id="no-recipient"),
    pytest.param(_mail(to=("oncall@example.com", "finance")), "email.to[1]", id="no-at"),
    pytest.param(_mail(to=("a@b@example.com",)), "email.to[0]", id="two-ats"),
    pytest.param(_mail(to=("@example.com",)), "email.to[0]", id="no-local-part"),
    pytest.param(
        _mail(to=("oncall@example.com\r\nBcc: x@evil.example",)),
        "email.to[0]",
        id="header-injection",
    ),
    pytest.param(_mail(to=("a@example.com, b@example.com",)), "email.to[0]", id="two-in-one"),
    pytest.param(_mail(sender="costwarden"), "email.sender", id="sender"),
    pytest.param(_mail(host=""), "email.host", id="no-host"),
    pytest.param(_mail(port=0), "email.port", id="port-0"),
    pytest.param(_mail(port=65536), "email.port", id="port-high"),
    pytest.param(_mail(port=True), "email.port", id="port-bool"),
    pytest.param(_mail(security="ssl"), "email.security", id="security"),
    pytest.param(_mail(username=None), "set together", id="password-alone"),
    pytest.param(_mail(password=None), "set together", id="username-alone"),
    pytest.param(_mail(password=""), "email.password", id="empty-password"),
]


@pytest.mark.parametrize(("channel", "problem"), BAD_CHANNELS)
def test_bad_channels_are_refused_by_field_never_by_value(channel: Channel, problem: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_channel(channel)
    message = str(caught.value)
    assert problem in message
    for secret in (SECRET, SECRET[6:], PASSWORD, SLACK_PATH, "T0SECRET", "t0k3n", "/in?"):
        assert secret not in message


# -- redaction -----------------------------------------------------------------------------


def test_a_redacted_webhook_shows_the_host_and_whether_a_secret_is_set() -> None:
    shown = redacted(WEBHOOK)
    assert shown == {
        "id": "ch_1",
        "name": "ops hook",
        "type": "webhook",
        "enabled": True,
        "source": "api",
        "filter": {"min_severity": "info", "org_ids": [], "kinds": []},
        "url": "https://hooks.example.com/…",
        "has_secret": True,
        "email": None,
    }
    assert redacted(dataclasses.replace(WEBHOOK, secret=None))["has_secret"] is False


def test_a_redacted_slack_channel_hides_the_path_that_is_its_secret() -> None:
    channel = dataclasses.replace(
        SLACK,
        enabled=False,
        filter=ChannelFilter(min_severity="warning", org_ids=("org_a",), kinds=("spike",)),
    )
    shown = redacted(channel)
    assert shown["url"] == "https://hooks.slack.com/…"
    assert shown["enabled"] is False
    assert shown["filter"] == {"min_severity": "warning", "org_ids": ["org_a"], "kinds": ["spike"]}
    assert b"SECRET" not in orjson.dumps(shown)


def test_a_redacted_email_channel_has_no_password() -> None:
    shown = redacted(EMAIL)
    assert shown["email"] == {
        "to": ["oncall@example.com", "finance@example.com"],
        "sender": "costwarden@example.com",
        "host": "smtp.example.com",
        "port": 587,
        "username": "costwarden",
        "security": "starttls",
        "has_password": True,
    }
    assert (shown["url"], shown["has_secret"]) == (None, False)
    assert PASSWORD.encode() not in orjson.dumps(shown)
    no_auth = redacted(_mail(username=None, password=None))["email"]
    assert isinstance(no_auth, dict) and no_auth["has_password"] is False


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T/B/x", "https://hooks.slack.com/…"),
        ("http://127.0.0.1:8080/hook?token=abc#frag", "http://127.0.0.1:8080/…"),
        ("https://user:pa55@Hooks.Example.com/in", "https://hooks.example.com/…"),
        ("https://[::1]:9000/in", "https://[::1]:9000/…"),
        ("https://example.com", "https://example.com/…"),
        ("not a url/with/a/secret", "…"),
        ("https://example.com:99999/secret", "…"),
    ],
)
def test_redacted_url(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


# -- content -------------------------------------------------------------------------------


def test_the_slack_payload_has_text_a_header_and_the_facts() -> None:
    payload = slack_payload(MESSAGE)
    assert payload["text"] == (
        "CRITICAL: Org acme: daily USD budget at 80 %: acme has spent 4 of 5 USD today."
    )
    blocks = payload["blocks"]
    assert isinstance(blocks, list)
    assert blocks[0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": "CRITICAL: Org acme: daily USD budget at 80 %"},
    }
    (fields_block,) = [b for b in blocks if "fields" in b]
    texts = [field["text"] for field in fields_block["fields"]]
    assert texts == [
        "*Scope*\norg org_acme",
        "*Limit*\n5 usd (daily-usd)",
        "*Spent*\n4 usd",
        "*Reserved*\n0.25 usd",
        "*Percent*\n85 %",
        "*Resets at*\n2026-12-02T00:00:00+00:00",
        "*Link*\n<https://costwarden.example.com/orgs/org_acme?x=1&amp;y=2|Open in costwarden>",
    ]
    orjson.dumps(payload)  # it is JSON as it stands


def test_slack_text_from_an_alert_cannot_mention_or_link() -> None:
    message = dataclasses.replace(
        MESSAGE, title="<!channel> spend", text="see <https://evil.example|here> & pay"
    )
    payload = slack_payload(message)
    dumped = orjson.dumps(payload).decode()
    assert "<!channel>" not in str(payload["text"])
    assert "&lt;https://evil.example|here&gt; &amp; pay" in dumped
    assert "<https://evil" not in dumped


def test_the_slack_payload_leaves_out_what_the_alert_lacks_and_keeps_to_slack_s_limits() -> None:
    message = AlertMessage(
        message_id="dlv_2",
        alert_id="al_2",
        kind="service",
        rule="provider-down",
        severity="warning",
        state="resolved",
        title="x" * 400,
        text="",
        created_at="2026-12-01T21:10:19+00:00",
    )
    payload = slack_payload(message)
    blocks = payload["blocks"]
    assert isinstance(blocks, list)
    assert [b["type"] for b in blocks] == ["header", "context"]
    assert blocks[0]["text"]["text"].startswith("RESOLVED: xxx")
    assert len(blocks[0]["text"]["text"]) == 150


def test_email_content_is_a_one_line_subject_and_a_plain_body() -> None:
    subject, body = email_content(dataclasses.replace(MESSAGE, title="Org acme:\r\nBcc: x@y"))
    assert subject == "[costwarden] CRITICAL: Org acme: Bcc: x@y"
    assert "\n" not in subject and "\r" not in subject
    subject, body = email_content(MESSAGE)
    assert subject == "[costwarden] CRITICAL: Org acme: daily USD budget at 80 %"
    assert body.splitlines() == [
        "CRITICAL: Org acme: daily USD budget at 80 %",
        "",
        "acme has spent 4 of 5 USD today.",
        "",
        "Scope:     org org_acme",
        "Limit:     5 usd (daily-usd)",
        "Spent:     4 usd",
        "Reserved:  0.25 usd",
        "Percent:   85 %",
        "Resets at: 2026-12-02T00:00:00+00:00",
        "Link:      https://costwarden.example.com/orgs/org_acme?x=1&y=2",
        "Alert:     al_1 (threshold, rule budget-80)",
        "State:     firing",
        "Created:   2026-12-01T21:10:19+00:00",
    ]
