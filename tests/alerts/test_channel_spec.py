"""The one channel parser of the admin API and the config file: each refusal names the field
it is about (so the config file can point at it), never the value."""

from __future__ import annotations

from typing import Any

import pytest

from costwarden.alerts.channel_spec import FieldInvalid, parse_channel
from costwarden.alerts.model import ChannelFilter
from costwarden.core.errors import InvalidInput

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HOOK = {"type": "webhook", "url": "https://hooks.example.com/x", "secret": SECRET}
MAIL = {"type": "email", "to": ["a@example.com"], "sender": "cw@example.com", "host": "smtp"}


def test_a_good_channel_is_built_with_its_source() -> None:
    channel = parse_channel("ops", {**HOOK, "kinds": ["threshold"]}, source="config")
    assert (channel.name, channel.type, channel.secret, channel.source) == (
        "ops", "webhook", SECRET, "config"
    )  # fmt: skip
    assert channel.filter == ChannelFilter(kinds=("threshold",))
    assert parse_channel("m", MAIL).source == "api"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"type": "pager"}, "type"),
        ({**HOOK, "extra": 1}, "extra"),
        ({"type": "webhook", "url": "https://hooks.example.com/x"}, "secret"),
        ({**HOOK, "url": "ftp://hooks.example.com/T0SECRET"}, "url"),
        ({**HOOK, "secret": "whsec_!!T0SECRET"}, "secret"),
        ({**MAIL, "to": ["a@example.com", "b@x, c@y"]}, "to[1]"),
        ({**MAIL, "port": True}, "port"),
        ({**MAIL, "username": "u"}, "password"),
        ({**MAIL, "password": "T0SECRET"}, "username"),
        ({**MAIL, "min_severity": "fatal"}, "min_severity"),
        ({**MAIL, "enabled": 1}, "enabled"),
    ],
)
def test_a_refusal_names_its_field_never_the_value(data: dict[str, Any], field: str) -> None:
    with pytest.raises(FieldInvalid) as caught:
        parse_channel("ops", data)
    assert caught.value.field == field
    assert isinstance(caught.value, InvalidInput)  # the admin API's 400
    assert str(caught.value).startswith(f"'{field}' ")
    assert "T0SECRET" not in str(caught.value) and SECRET not in str(caught.value)
