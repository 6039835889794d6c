"""``[[alerts.channels]]``: alert channels written in the config file.

Each table is a channel as the admin API's ``PUT /admin/alert-channels/{name}`` takes it, plus
its ``name``, and goes through the same parser
(:func:`costwarden.alerts.channel_spec.parse_channel`): the same fields, the same rules, the
same words. A bad entry is a ConfigError naming its key (``alerts.channels[1].url``) and
line, never its value.

Secrets need not be written into the file: ``url``, ``secret`` and ``password`` may each be
given as ``<field>_env = "VARIABLE"`` instead, read from the environment when the config is
loaded (as a provider's ``api_key_env``). Giving both a field and its ``_env`` is an error;
so is an unset or empty variable, except for admin commands that load the config without
secrets (``require_secrets=False``), which skip such a channel and list it as unresolved.

The gateway stores these channels at start-up (``storage.config_channels``); through the
admin API and CLI they are read-only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from costwarden.alerts.channel_spec import FieldInvalid, parse_channel
from costwarden.alerts.model import Channel
from costwarden.config.lines import ConfigText as _Ctx
from costwarden.core.errors import InvalidInput
from costwarden.storage.repo import clean_name

KEY: Final = "alerts.channels"
# The fields that hold a secret (a Slack URL's path is one), so each may come from a variable.
ENV_FIELDS: Final = ("url", "secret", "password")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# `costwarden settings` rows: (field, help).
CHANNEL_HELP: Final[tuple[tuple[str, str], ...]] = (
    ("name", "The channel's name (unique; what the admin API and CLI show). Required."),
    ("type", "webhook (signed per Standard Webhooks), slack (incoming webhook) or email."),
    ("url", "webhook and slack: where to POST, http(s)://host[:port][/path]. A secret for "
     "Slack: prefer url_env."),
    ("url_env", "The environment variable holding url (instead of url)."),
    ("secret", "webhook: the signing secret, whsec_ + base64. Prefer secret_env."),
    ("secret_env", "The environment variable holding secret (instead of secret)."),
    ("to", 'email: the recipients, e.g. ["oncall@example.com"] (1 to 50).'),
    ("sender", "email: the From address."),
    ("host", "email: the SMTP server."),
    ("port", "email: the SMTP port (default 587)."),
    ("username", "email: the SMTP user (with password)."),
    ("password", "email: the SMTP password (with username). Prefer password_env."),
    ("password_env", "The environment variable holding password (instead of password)."),
    ("security", "email: starttls (default), tls or none."),
    ("min_severity", "Only alerts of at least this severity: info (default), warning, critical."),
    ("org_ids", "Only alerts of these orgs, by org id (absent: every org's, and platform "
     "alerts)."),
    ("kinds", "Only alerts of these kinds: threshold, forecast, spike, service, session, test "
     "(absent: all)."),
    ("enabled", "false keeps the channel but sends it nothing (default true)."),
)  # fmt: skip


def split_channels(raw_alerts: Any) -> tuple[Any, Any]:
    """``[alerts]`` without its ``channels`` (a list of tables, not a setting), and those."""
    if not isinstance(raw_alerts, dict):
        return raw_alerts, []  # the section check says what is wrong with it
    rest = {k: v for k, v in raw_alerts.items() if k != "channels"}
    return rest, raw_alerts.get("channels", [])


def parse_channels(
    items: Any, ctx: _Ctx, env: Mapping[str, str], require_secrets: bool
) -> tuple[tuple[Channel, ...], tuple[str, ...]]:
    """The channels of ``[[alerts.channels]]``, validated, and the names of those skipped for
    an unset variable (only when ``require_secrets`` is False); ConfigError otherwise."""
    if not isinstance(items, list):
        raise ctx.fail(KEY, "must be an array of tables ([[alerts.channels]])", "channels")
    channels: list[Channel] = []
    unresolved: list[str] = []
    for i, item in enumerate(items):
        key = f"{KEY}[{i}]"
        if not isinstance(item, dict):
            raise ctx.fail(key, "must be a table", None)
        name = _name(item.get("name"), key, ctx)
        if name in {c.name for c in channels} | set(unresolved):
            raise ctx.fail(f"{key}.name", f"duplicate channel name {name!r}", name)
        data = {k: v for k, v in item.items() if k != "name"}
        from_env = _resolve_env(data, key, name, ctx, env, require_secrets)
        if from_env is None:
            unresolved.append(name)
            continue
        try:
            channels.append(parse_channel(name, data, source="config"))
        except FieldInvalid as exc:
            raise _blamed(exc, key, from_env, ctx) from None
    return tuple(channels), tuple(unresolved)


def _name(value: Any, key: str, ctx: _Ctx) -> str:
    if value is None:
        raise ctx.fail(key, "needs a name", None)
    try:
        return clean_name(value, "channel")
    except InvalidInput as exc:
        raise ctx.fail(f"{key}.name", str(exc), None) from None


def _resolve_env(
    data: dict[str, Any],
    key: str,
    name: str,
    ctx: _Ctx,
    env: Mapping[str, str],
    require_secrets: bool,
) -> dict[str, str] | None:
    """Replace each ``<field>_env`` of ``data`` by ``<field>`` read from the environment;
    {field: variable} of those, or None if a variable is unset and secrets are not required."""
    from_env: dict[str, str] = {}
    missing = False
    for field in ENV_FIELDS:
        env_key = f"{field}_env"
        if env_key not in data:
            continue
        var = data.pop(env_key)
        if not isinstance(var, str) or not _ENV_NAME.match(var):
            raise ctx.fail(f"{key}.{env_key}", "must be the name of an environment variable")
        if field in data:
            raise ctx.fail(f"{key}.{env_key}", f"give {field} or {env_key}, not both", var)
        value = env.get(var)
        if not value:
            if require_secrets:
                raise ctx.fail(
                    f"{key}.{env_key}",
                    f"environment variable {var} is not set (channel {name!r})",
                    var,
                )
            missing = True
            continue
        data[field] = value
        from_env[field] = var
    return None if missing else from_env


def _blamed(exc: FieldInvalid, key: str, from_env: Mapping[str, str], ctx: _Ctx) -> Exception:
    """The ConfigError of a field the parser refused, at the key the value came from (its
    ``_env`` key for one read from the environment); the value itself is never quoted."""
    if not exc.field:
        return ctx.fail(key, exc.problem, None)
    field = exc.field.split("[", 1)[0]
    if field in from_env:
        return ctx.fail(
            f"{key}.{field}_env",
            f"the value of environment variable {from_env[field]} {exc.problem}",
            None,
        )
    return ctx.fail(f"{key}.{exc.field}", exc.problem, None)
