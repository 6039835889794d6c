"""Delivery policy: when to retry, which channel takes which alert, whether a channel is
usable, how it may be shown, and what Slack and e-mail receive. Plain functions over the data
of :mod:`costwarden.alerts.model`; no I/O (the senders are :mod:`costwarden.alerts.channels`).

Retries back off exponentially and give up after a day (:func:`next_attempt_at`): a receiver
down for a deploy or an outage gets the alert when it is back, and one that stays down for a
day gets nothing more; the delivery goes to the dead letter, where an operator can see it.
The times are computed from the first attempt, not from the last one, so a worker that ran
late does not push the deadline out.

Channel URLs and secrets are credentials: a Slack incoming-webhook URL's path *is* its
secret, a webhook URL often carries a token in its query. So :func:`validate_channel` names
the field that is wrong and never quotes its value, and :func:`redacted` shows only
``scheme://host[:port]/…`` of a URL and whether a secret or password is set.
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
from typing import Final
from urllib.parse import urlsplit

from costwarden.alerts.model import (
    CHANNEL_TYPES,
    SEVERITIES,
    AlertMessage,
    Channel,
    ChannelFilter,
    EmailSettings,
    Severity,
)
from costwarden.core.errors import InvalidInput

__all__ = [
    "MAX_DELAY_SECONDS",
    "RETRY_WINDOW_SECONDS",
    "email_content",
    "matches",
    "next_attempt_at",
    "redacted",
    "redacted_url",
    "retry_delays",
    "slack_payload",
    "validate_channel",
]

DEFAULT_BASE_SECONDS: Final = 10.0
MAX_DELAY_SECONDS: Final = 3600.0  # no wait between two attempts is longer than this
RETRY_WINDOW_SECONDS: Final = 86_400.0  # no attempt later than this after the first one
_RANK: Final[dict[Severity, int]] = {severity: i for i, severity in enumerate(SEVERITIES)}
_SECURITY: Final = ("starttls", "tls", "none")
_WEBHOOK_SECRET_PREFIX: Final = "whsec_"
# Slack's limits (api.slack.com/reference/block-kit): a header's text, a section's text and
# one of its fields; beyond them Slack refuses the whole message.
_SLACK_HEADER_MAX: Final = 150
_SLACK_TEXT_MAX: Final = 3000
_SLACK_FIELD_MAX: Final = 2000


# -- retries -------------------------------------------------------------------------------


def retry_delays(*, base: float = DEFAULT_BASE_SECONDS) -> tuple[float, ...]:
    """The waits between attempts, in seconds: the first retry ``base`` after the first
    attempt, each wait twice the one before, none longer than an hour, and no attempt later
    than 24 h after the first. With the default base of 10 s::

        10, 20, 40, 80, 160, 320, 640, 1280, 2560  (5,110 s, 1 h 25 min 10 s, in all)
        then 3600 twenty-two times                 (the last attempt at 84,310 s, 23 h 25 min)

    that is 31 retries, 32 attempts in all; the 33rd would be at 87,910 s, past the day.
    """
    return _schedule(_checked_base(base))


def next_attempt_at(
    attempts_made: int, first_attempt_at: float, *, base: float = DEFAULT_BASE_SECONDS
) -> float | None:
    """When the next attempt is due (epoch seconds) after ``attempts_made`` attempts that
    started at ``first_attempt_at``; ``None`` once it would be more than 24 h after the first
    attempt: the delivery goes to the dead letter. ``attempts_made=0``: the first attempt, at
    once. The schedule is :func:`retry_delays`."""
    if isinstance(attempts_made, bool) or not isinstance(attempts_made, int):
        raise TypeError(f"attempts_made must be an int, got {attempts_made!r}")
    if attempts_made < 0:
        raise ValueError(f"attempts_made must be 0 or more, got {attempts_made}")
    offsets = _offsets(_checked_base(base))
    if attempts_made > len(offsets):
        return None
    return first_attempt_at + (0.0 if attempts_made == 0 else offsets[attempts_made - 1])


def _checked_base(base: float) -> float:
    if isinstance(base, bool) or not isinstance(base, int | float):
        raise TypeError(f"base must be a number of seconds, got {base!r}")
    if not math.isfinite(base) or base <= 0:
        raise ValueError(f"base must be above 0 seconds, got {base!r}")
    return float(base)


@functools.lru_cache(maxsize=8)
def _schedule(base: float) -> tuple[float, ...]:
    delays: list[float] = []
    elapsed, delay = 0.0, base
    while elapsed + min(delay, MAX_DELAY_SECONDS) <= RETRY_WINDOW_SECONDS:
        delays.append(min(delay, MAX_DELAY_SECONDS))
        elapsed += delays[-1]
        delay *= 2
    return tuple(delays)


@functools.lru_cache(maxsize=8)
def _offsets(base: float) -> tuple[float, ...]:
    """Seconds from the first attempt to the second, third, ... attempt."""
    offsets: list[float] = []
    elapsed = 0.0
    for delay in _schedule(base):
        elapsed += delay
        offsets.append(elapsed)
    return tuple(offsets)


# -- filters -------------------------------------------------------------------------------


def matches(filter: ChannelFilter, *, severity: Severity, org_id: str | None, kind: str) -> bool:
    """Whether a channel with this filter takes an alert: severity at least the filter's
    (info < warning < critical), org and kind among the filter's (an empty tuple: any).

    An alert of no org (a platform-wide one, e.g. a provider down) does not match a filter
    that names orgs: such a channel belongs to those orgs' people, and platform alerts go to
    the channels that take every org."""
    if severity not in _RANK:
        raise ValueError(f"unknown severity {severity!r} (known: {', '.join(SEVERITIES)})")
    if _RANK[severity] < _RANK[filter.min_severity]:
        return False
    if filter.org_ids and org_id not in filter.org_ids:
        return False
    return not filter.kinds or kind in filter.kinds


# -- validation ----------------------------------------------------------------------------


def validate_channel(channel: Channel) -> None:
    """Raise :class:`InvalidInput` unless ``channel`` can be delivered to.

    Messages name the field (``url``, ``secret``, ``email.password``) and never quote a URL,
    secret or password."""
    if channel.type not in CHANNEL_TYPES:
        raise InvalidInput(
            f"unknown channel type {channel.type!r} (known: {', '.join(CHANNEL_TYPES)})"
        )
    if not isinstance(channel.name, str) or not channel.name.strip():
        raise InvalidInput("channel name must not be empty")
    _validate_filter(channel.filter)
    if channel.type in ("webhook", "slack"):
        if not _is_http_url(channel.url):
            raise InvalidInput(
                f"{channel.type} channel url: invalid URL (it needs http:// or https:// and a "
                "host, and no spaces)"
            )
        if channel.type == "webhook" and channel.secret is None:
            raise InvalidInput("webhook channel needs a secret to sign its requests with")
        if channel.type == "webhook" and not _is_webhook_secret(channel.secret):
            raise InvalidInput(
                "webhook channel secret: invalid (a Standard Webhooks secret is 'whsec_' "
                "followed by base64, or base64 alone)"
            )
    else:
        _validate_email(channel.email)


def _validate_filter(filter: ChannelFilter) -> None:
    if filter.min_severity not in SEVERITIES:
        raise InvalidInput(
            f"channel filter min_severity must be one of {', '.join(SEVERITIES)}, "
            f"got {filter.min_severity!r}"
        )
    for field, values in (("org_ids", filter.org_ids), ("kinds", filter.kinds)):
        if not isinstance(values, tuple) or not all(isinstance(v, str) and v for v in values):
            raise InvalidInput(f"channel filter {field} must be a list of non-empty strings")


def _is_http_url(url: str | None) -> bool:
    # urlsplit silently drops tabs and newlines, and accepts spaces in a host, so those are
    # refused before it sees the URL.
    if not isinstance(url, str) or any(ch.isspace() or not ch.isprintable() for ch in url):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and port != 0


def _is_webhook_secret(secret: str | None) -> bool:
    """A key standardwebhooks' ``Webhook(secret)`` takes: optionally ``whsec_``, then
    non-empty base64 (unpadded is fine). Stricter than the library, which skips characters
    that are not base64: a mistyped secret would sign with a key the receiver lacks."""
    if not isinstance(secret, str):
        return False
    key = secret.removeprefix(_WEBHOOK_SECRET_PREFIX)
    try:
        return bool(base64.b64decode(key + "=" * (-len(key) % 4), validate=True))
    except (binascii.Error, ValueError):
        return False


def _validate_email(settings: EmailSettings | None) -> None:
    if not isinstance(settings, EmailSettings):
        raise InvalidInput("email channel needs email settings (to, sender, host)")
    if not isinstance(settings.to, tuple) or not settings.to:
        raise InvalidInput("email channel email.to needs at least one recipient")
    for i, address in enumerate(settings.to):
        if not _is_address(address):
            raise InvalidInput(f"email.to[{i}] is not an e-mail address (name@domain)")
    if not _is_address(settings.sender):
        raise InvalidInput("email.sender is not an e-mail address (name@domain)")
    if not _is_token(settings.host):
        raise InvalidInput("email.host must be a host name or address, without spaces")
    port = settings.port
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InvalidInput(f"email.port must be an integer in 1..65535, got {port!r}")
    if settings.security not in _SECURITY:
        raise InvalidInput(
            f"email.security must be one of {', '.join(_SECURITY)}, got {settings.security!r}"
        )
    if (settings.username is None) != (settings.password is None):
        raise InvalidInput("email.username and email.password must be set together")
    if settings.username is not None and not _is_token(settings.username):
        raise InvalidInput("email.username must not be empty or contain spaces")
    if settings.password is not None and (
        not isinstance(settings.password, str) or not settings.password
    ):
        raise InvalidInput("email.password must not be empty")


def _is_token(value: object) -> bool:
    return (
        isinstance(value, str)
        and bool(value)
        and not any(ch.isspace() or not ch.isprintable() for ch in value)
    )


def _is_address(value: object) -> bool:
    # A plain addr-spec, not a display name: anything else (commas, angle brackets, line
    # breaks) could smuggle more recipients or headers into the message.
    if not _is_token(value) or any(ch in '<>,;"()' for ch in str(value)):
        return False
    local, at, domain = str(value).partition("@")
    return bool(local) and bool(at) and bool(domain) and "@" not in domain


# -- display -------------------------------------------------------------------------------


def redacted(channel: Channel) -> dict[str, object]:
    """The channel as the admin API shows it: no secret, no password, and of the URL only
    ``scheme://host[:port]/…``."""
    email: dict[str, object] | None = None
    if channel.email is not None:
        settings = channel.email
        email = {
            "to": list(settings.to),
            "sender": settings.sender,
            "host": settings.host,
            "port": settings.port,
            "username": settings.username,
            "security": settings.security,
            "has_password": settings.password is not None,
        }
    return {
        "id": channel.id,
        "name": channel.name,
        "type": channel.type,
        "enabled": channel.enabled,
        "source": channel.source,
        "filter": {
            "min_severity": channel.filter.min_severity,
            "org_ids": list(channel.filter.org_ids),
            "kinds": list(channel.filter.kinds),
        },
        "url": None if channel.url is None else redacted_url(channel.url),
        "has_secret": channel.secret is not None,
        "email": email,
    }


def redacted_url(url: str) -> str:
    """``scheme://host[:port]/…``: the path, query, fragment and any user:password dropped
    (``…`` alone when the URL has no scheme and host to show)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "…"
    host = parts.hostname
    if not parts.scheme or not host or any(ch.isspace() for ch in host):
        return "…"
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{'' if port is None else f':{port}'}/…"


# -- content -------------------------------------------------------------------------------


def _facts(message: AlertMessage) -> list[tuple[str, str]]:
    """The numbers an on-call needs, labelled, in a fixed order; absent ones left out."""
    unit = f" {message.metric}" if message.metric else ""
    facts: list[tuple[str, str]] = []
    if message.scope is not None:
        scope = message.scope if message.scope_id is None else f"{message.scope} {message.scope_id}"
        facts.append(("Scope", scope))
    if message.limit is not None:
        name = f" ({message.limit_name})" if message.limit_name else ""
        facts.append(("Limit", f"{message.limit}{unit}{name}"))
    if message.spent is not None:
        facts.append(("Spent", f"{message.spent}{unit}"))
    if message.reserved is not None:
        facts.append(("Reserved", f"{message.reserved}{unit}"))
    if message.percent is not None:
        facts.append(("Percent", f"{message.percent} %"))
    if message.resets_at is not None:
        facts.append(("Resets at", message.resets_at))
    if message.dashboard_url is not None:
        facts.append(("Link", message.dashboard_url))
    return facts


def _headline(message: AlertMessage) -> str:
    """``CRITICAL: title`` while firing; ``RESOLVED: title`` and the like after. One line."""
    tag = message.severity if message.state == "firing" else message.state
    return f"{tag.upper()}: {' '.join(message.title.split())}"


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn reads <...> as links and mentions (<!channel> pages everyone), so text
    # from an alert must have its control characters escaped.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_payload(message: AlertMessage) -> dict[str, object]:
    """A Slack incoming-webhook message: ``text`` (notifications and clients without blocks)
    and ``blocks``: a header, the alert's text, and its facts as fields."""
    fields: list[dict[str, str]] = []
    for label, value in _facts(message):
        if label == "Link":
            # a link's URL is escaped the same way (Slack unescapes it before opening it), and
            # a "|" in it would end the URL early
            shown = f"<{_slack_escape(value).replace('|', '%7C')}|Open in costwarden>"
        else:
            shown = _slack_escape(value)
        fields.append({"type": "mrkdwn", "text": _clip(f"*{label}*\n{shown}", _SLACK_FIELD_MAX)})
    blocks: list[dict[str, object]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _clip(_headline(message), _SLACK_HEADER_MAX)},
        },
    ]
    if message.text.strip():
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": _clip(_slack_escape(message.text), _SLACK_TEXT_MAX),
                },
            }
        )
    if fields:
        blocks.append({"type": "section", "fields": fields})
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": _slack_escape(
                        f"{message.kind} · {message.rule} · alert {message.alert_id} · "
                        f"{message.created_at}"
                    ),
                }
            ],
        }
    )
    text = _headline(message)
    if message.text.strip():
        text = f"{text}: {' '.join(message.text.split())}"
    return {"text": _clip(_slack_escape(text), _SLACK_TEXT_MAX), "blocks": blocks}


def email_content(message: AlertMessage) -> tuple[str, str]:
    """``(subject, plain-text body)``. The subject is one line (a line break in a header
    would end it); the body is the text, the facts one per line, and where it came from."""
    subject = _clip(f"[costwarden] {_headline(message)}", 200)
    lines = [_headline(message), ""]
    if message.text.strip():
        lines += [message.text.strip(), ""]
    rows = [
        *_facts(message),
        ("Alert", f"{message.alert_id} ({message.kind}, rule {message.rule})"),
        ("State", message.state),
        ("Created", message.created_at),
    ]
    width = max(len(label) for label, _ in rows) + 1
    lines += [f"{label + ':':<{width}} {value}" for label, value in rows]
    return subject, "\n".join(lines) + "\n"
