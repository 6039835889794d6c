"""Bring a database to the current schema, safely, from code.

Gateways migrate on startup, so this must work without an ``alembic.ini`` on disk (the
Alembic ``Config`` is built here and points at the migrations shipped inside the package),
and it must be safe when several gateway processes start at once:

- PostgreSQL: the whole upgrade runs in one transaction (PostgreSQL has transactional DDL)
  that first takes ``pg_advisory_xact_lock(MIGRATION_LOCK_ID)``. A second process blocks on
  the lock, then finds the schema at head and does nothing. The lock is released by the
  commit or rollback, so a crashed migrator cannot leave it held.
- SQLite: the transaction starts with ``BEGIN IMMEDIATE``, which takes the database write
  lock up front; concurrent migrators queue on the busy timeout the same way.

Running :func:`migrate` on an up-to-date database is a no-op.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import SQLAlchemyError

from costwarden.core.errors import StorageError
from costwarden.storage.db import Bind, begin_write, connect_read, create_engine_for, redact_url

logger = logging.getLogger(__name__)

# Fixed key for pg_advisory_xact_lock; any constant works as long as every costwarden
# process uses the same one ("cwmg" in ASCII).
MIGRATION_LOCK_ID = 0x63776D67

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    """An Alembic Config for costwarden's migrations, built in code (no ini file)."""
    cfg = Config()
    # ConfigParser interpolation treats '%' specially; escape it in the path.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    cfg.set_main_option("path_separator", "os")
    return cfg


def head_revision() -> str:
    """The revision the shipped migrations lead to."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise StorageError("no migrations found in the costwarden package")
    return head


def current_revision(bind: Bind) -> str | None:
    """The revision the database is at (None for an unmigrated database)."""
    with connect_read(bind) as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine_or_url: Engine | str | URL) -> None:
    """Upgrade the database to the latest schema (``alembic upgrade head``); idempotent.

    Raises StorageError when the database cannot be reached or the upgrade fails.
    """
    if isinstance(engine_or_url, Engine):
        _migrate_engine(engine_or_url)
        return
    engine = create_engine_for(engine_or_url)
    try:
        _migrate_engine(engine)
    finally:
        engine.dispose()


def _migrate_engine(engine: Engine) -> None:
    where = redact_url(engine.url)
    cfg = alembic_config()
    try:
        with begin_write(engine) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_ID})
            before = MigrationContext.configure(conn).get_current_revision()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            after = MigrationContext.configure(conn).get_current_revision()
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc.__class__.__name__).strip()
        logger.error("migrating %s failed: %s", where, detail.splitlines()[0] if detail else "")
        raise StorageError(f"cannot migrate database {where}: {detail}") from exc
    finally:
        cfg.attributes.pop("connection", None)
    if before != after:
        logger.info("migrated %s from %s to %s", where, before or "empty", after)
    else:
        logger.debug("database %s already at %s", where, after)
