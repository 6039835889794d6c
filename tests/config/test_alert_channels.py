"""``[[alerts.channels]]``: channels of the config file parsed by the admin API's own parser,
secrets read from the environment, and every bad entry a ConfigError that names its key and
line and never shows a secret."""

from __future__ import annotations

import base64

import pytest

from costwarden.alerts.model import ChannelFilter, EmailSettings
from costwarden.config.reference import settings_help
from costwarden.config.settings import load_settings
from costwarden.core.errors import ConfigError

SECRET = "whsec_" + base64.b64encode(b"config-channel-key-0123456789abcd").decode()
SLACK_URL = "https://hooks.example.com/services/T0SECRET/B0SECRET/xoxbSecretPath"
PASSWORD = "smtp-hunter2-password"
ENV = {"CW_HOOK_SECRET": SECRET, "CW_SLACK_URL": SLACK_URL, "CW_SMTP_PASSWORD": PASSWORD}
# What no error may show: the secrets, and the parts of them a careless message might quote.
LEAKS = (SECRET, SECRET[6:], SLACK_URL, "T0SECRET", "xoxbSecretPath", PASSWORD)

GOOD = f"""
[alerts]
dashboard_url = "https://gw.example.com"

[[alerts.channels]]
name = "ops"
type = "webhook"
url = "https://hooks.example.com/cw"
secret_env = "CW_HOOK_SECRET"
min_severity = "warning"
kinds = ["threshold", "forecast"]

[[alerts.channels]]
name = "chat"
type = "slack"
url_env = "CW_SLACK_URL"
org_ids = ["org_1", "org_2"]
enabled = false

[[alerts.channels]]
name = "mail"
type = "email"
to = ["oncall@example.com", "finance@example.com"]
sender = "costwarden@example.com"
host = "smtp.example.com"
port = 465
username = "cw"
password_env = "CW_SMTP_PASSWORD"
security = "tls"

[[alerts.channels]]
name = "inline"
type = "webhook"
url = "http://127.0.0.1:9000/hook"
secret = "{SECRET}"
"""


def _load(text: str, env: dict[str, str] | None = None, **kwargs: bool) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(text=text, env=ENV if env is None else env, **kwargs)
    message = str(caught.value)
    for leak in LEAKS:
        assert leak not in message, message
    return message


def test_channels_are_parsed_with_their_secrets_from_the_environment() -> None:
    settings = load_settings(text=GOOD, env=ENV)
    ops, chat, mail, inline = settings.alerts.channels
    assert settings.alerts.dashboard_url == "https://gw.example.com"  # [alerts] still read
    assert (ops.name, ops.type, ops.url, ops.secret) == (
        "ops",
        "webhook",
        "https://hooks.example.com/cw",
        SECRET,
    )
    assert ops.filter == ChannelFilter("warning", (), ("threshold", "forecast"))
    assert (chat.type, chat.url, chat.enabled) == ("slack", SLACK_URL, False)
    assert chat.filter.org_ids == ("org_1", "org_2")
    assert mail.email == EmailSettings(
        to=("oncall@example.com", "finance@example.com"), sender="costwarden@example.com",
        host="smtp.example.com", port=465, username="cw", password=PASSWORD, security="tls",
    )  # fmt: skip
    assert inline.secret == SECRET
    assert {c.source for c in settings.alerts.channels} == {"config"}
    assert settings.alerts.channels_unresolved == ()
    assert all(secret not in repr(settings) for secret in LEAKS)


def test_no_channels_is_the_default() -> None:
    assert load_settings(text="", env={}).alerts.channels == ()
    assert load_settings(text="[alerts]\nenabled = true\n", env={}).alerts.channels == ()


def _one(body: str) -> str:
    return (
        f'[alerts]\nenabled = true\n\n[[alerts.channels]]\nname = "ok"\ntype = "slack"\n'
        f'url = "https://hooks.example.com/x"\n\n[[alerts.channels]]\n{body}\n'
    )


WEBHOOK = 'name = "ops"\ntype = "webhook"\nurl = "https://h.example.com/x"\n'
MAIL = 'name = "m"\ntype = "email"\nto = ["a@example.com"]\nsender = "b@example.com"\n'


@pytest.mark.parametrize(
    ("body", "key", "words"),
    [
        pytest.param(
            'type = "slack"\nurl = "https://h.example.com/x"',
            "alerts.channels[1]",
            "needs a name",
            id="no-name",
        ),
        pytest.param(
            'name = "ok"\ntype = "slack"\nurl = "https://h.example.com/y"',
            "alerts.channels[1].name",
            "duplicate channel name",
            id="duplicate",
        ),
        pytest.param(
            'name = "p"\ntype = "pager"',
            "alerts.channels[1].type",
            "must be one of webhook, slack, email",
            id="type",
        ),
        pytest.param(
            'name = "p"\ntype = "slack"', "alerts.channels[1].url", "is required", id="no-url"
        ),
        pytest.param(
            'name = "p"\ntype = "slack"\nurl = "ftp://hooks.example.com/T0SECRET"',
            "alerts.channels[1].url",
            "http:// or https://",
            id="url-scheme",
        ),
        pytest.param(
            f'name = "p"\ntype = "slack"\nurl = "{SLACK_URL} x"',
            "alerts.channels[1].url",
            "is not valid",
            id="url-space",
        ),
        pytest.param(WEBHOOK, "alerts.channels[1].secret", "is required", id="unsigned"),
        pytest.param(
            WEBHOOK + 'secret = "whsec_!!T0SECRET"',
            "alerts.channels[1].secret",
            "Standard Webhooks",
            id="secret",
        ),
        pytest.param(
            WEBHOOK + f'secret = "{SECRET}"\nmin_severity = "fatal"',
            "alerts.channels[1].min_severity",
            "info, warning, critical",
            id="severity",
        ),
        pytest.param(
            WEBHOOK + f'secret = "{SECRET}"\nkinds = ["budget"]',
            "alerts.channels[1].kinds",
            "threshold, forecast",
            id="kinds",
        ),
        pytest.param(
            WEBHOOK + f'secret = "{SECRET}"\norg_ids = "org_1"',
            "alerts.channels[1].org_ids",
            "list",
            id="org-ids",
        ),
        pytest.param(
            WEBHOOK + f'secret = "{SECRET}"\nenabled = "yes"',
            "alerts.channels[1].enabled",
            "true or false",
            id="enabled",
        ),
        pytest.param(
            WEBHOOK + f'secret = "{SECRET}"\nto = ["a@example.com"]',
            "alerts.channels[1].to",
            "unknown field for a webhook",
            id="unknown-field",
        ),
        pytest.param(MAIL, "alerts.channels[1].host", "is required", id="no-host"),
        pytest.param(
            MAIL.replace('"a@example.com"', '"a@example.com, c@d"') + 'host = "smtp"',
            "alerts.channels[1].to[0]",
            "e-mail address",
            id="to",
        ),
        pytest.param(
            MAIL + 'host = "smtp"\nport = 70000', "alerts.channels[1].port", "1 to 65535", id="port"
        ),
        pytest.param(
            MAIL + 'host = "smtp"\nsecurity = "ssl"',
            "alerts.channels[1].security",
            "starttls, tls, none",
            id="security",
        ),
        pytest.param(
            MAIL + 'host = "smtp"\nusername = "cw"',
            "alerts.channels[1].password",
            "go together",
            id="username-alone",
        ),
        pytest.param(
            MAIL + f'host = "smtp"\nusername = "cw"\npassword = "{PASSWORD}"\nport = 25.5',
            "alerts.channels[1].port",
            "whole number",
            id="port-float",
        ),
        pytest.param(
            'name = "p"\ntype = "slack"\nurl_env = "CW_UNSET"',
            "alerts.channels[1].url_env",
            "CW_UNSET is not set",
            id="env-unset",
        ),
        pytest.param(
            'name = "p"\ntype = "slack"\nurl_env = "not a name"',
            "alerts.channels[1].url_env",
            "name of an environment variable",
            id="env-name",
        ),
        pytest.param(
            f'name = "p"\ntype = "slack"\nurl_env = "CW_SLACK_URL"\nurl = "{SLACK_URL}"',
            "alerts.channels[1].url_env",
            "not both",
            id="env-and-value",
        ),
        pytest.param(
            WEBHOOK + 'secret_env = "CW_SMTP_PASSWORD"',
            "alerts.channels[1].secret_env",
            "environment variable CW_SMTP_PASSWORD is not valid",
            id="env-bad-value",
        ),
        pytest.param(
            'name = "p"\ntype = "slack"\nurl = "https://h.example.com/x"\n'
            'password_env = "CW_SMTP_PASSWORD"',
            "alerts.channels[1].password_env",
            "unknown field for a slack",
            id="env-wrong-type",
        ),
    ],
)
def test_a_bad_entry_names_its_key_and_line_and_never_a_secret(
    body: str, key: str, words: str
) -> None:
    text = _one(body)
    message = _load(text)
    assert f": {key}: " in message, message
    assert words in message, message
    # It points into the bad table (its header for a missing field), not at the good one.
    line = int(message.split(":")[1])
    assert line >= text.splitlines().index("[[alerts.channels]]", 4) + 1, message


def test_channels_must_be_tables() -> None:
    assert "alerts.channels: must be an array of tables" in _load("[alerts]\nchannels = 3\n")
    assert "alerts.channels[0]: must be a table" in _load("[alerts]\nchannels = [1]\n")


def test_without_required_secrets_an_unset_variable_skips_the_channel() -> None:
    # Admin commands load the config without secrets: such a channel is left out, by name.
    settings = load_settings(text=GOOD, env={}, require_secrets=False)
    assert [c.name for c in settings.alerts.channels] == ["inline"]
    assert settings.alerts.channels_unresolved == ("ops", "chat", "mail")
    # A value that is there is still checked.
    message = _load(_one(WEBHOOK + 'secret = "whsec_!!"'), env={}, require_secrets=False)
    assert "alerts.channels[1].secret" in message


def test_the_channel_fields_are_in_costwarden_settings() -> None:
    keys = {row[0] for row in settings_help()}
    for field in (
        "name",
        "type",
        "url",
        "url_env",
        "secret_env",
        "password_env",
        "to",
        "min_severity",
        "org_ids",
        "kinds",
        "enabled",
    ):
        assert f"alerts.channels[].{field}" in keys
    assert "alerts.channels" not in keys and "alerts.channels_unresolved" not in keys
