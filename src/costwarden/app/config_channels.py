"""At gateway start: the config file's alert channels into the database.

Every process does it, after the migrations and before the delivery loop starts, so that a
channel added to the file gets the first alert raised after the start; concurrent starts are
safe (``storage.config_channels`` serializes them, and each change is made by one of them).
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.engine import Engine

from costwarden.alerts.model import Channel
from costwarden.config.alerts import AlertSettings
from costwarden.core.errors import ConfigError
from costwarden.storage.config_channels import sync_config_channels

logger = logging.getLogger(__name__)


async def sync_channels(engine: Engine, settings: AlertSettings) -> None:
    """Store ``[[alerts.channels]]`` (see ``storage.config_channels``) and log what changed;
    names only, never a URL or secret."""
    if settings.channels_unresolved:
        # Only a config loaded without secrets skips a channel; syncing it would disable it.
        raise ConfigError(
            "alert channels whose secret variables are unset: "
            + ", ".join(settings.channels_unresolved)
        )
    result = await asyncio.to_thread(sync_config_channels, engine, settings.channels)
    for name in result.taken_over:
        logger.warning(
            "alert channel %r was made through the admin API and is now the config file's "
            "[[alerts.channels]] entry of that name: the file's settings replace it, and the "
            "admin API and CLI can no longer change it",
            name,
        )
    if result.saved:
        logger.info("alert channels from the config file saved: %s", ", ".join(result.saved))
    if result.released:
        logger.info(
            "alert channels no longer in the config file disabled (now the admin API's): %s",
            ", ".join(result.released),
        )


def channel_secrets(channels: tuple[Channel, ...]) -> list[str]:
    """The secrets of ``channels`` (a Slack or webhook URL, a signing secret, an SMTP
    password), for log redaction."""
    found: list[str] = []
    for c in channels:
        found.extend(s for s in (c.url, c.secret) if s)
        if c.email is not None and c.email.password:
            found.append(c.email.password)
    return found
