"""Alembic environment for costwarden, driven from code rather than an alembic.ini.

:func:`costwarden.storage.migrate.migrate` builds the Alembic ``Config`` in code and hands
over an open connection (already inside the transaction, and on PostgreSQL already holding
the migration advisory lock) in ``config.attributes["connection"]``. Running the ``alembic``
CLI against a config with ``sqlalchemy.url`` set works too, for development.
"""

from __future__ import annotations

import logging

from alembic import context
from sqlalchemy.engine import Connection

from costwarden.storage.db import create_engine_for
from costwarden.storage.partitions import is_partition
from costwarden.storage.schema import metadata

logger = logging.getLogger(__name__)


def include_name(name: str | None, type_: str, _parents: object) -> bool:
    """What autogenerate compares: not the ledger's partitions (PostgreSQL), which the
    metadata does not describe (see storage/partitions.py)."""
    return not (type_ == "table" and name is not None and is_partition(name))


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        include_name=include_name,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if isinstance(connection, Connection):
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection in config.attributes and no sqlalchemy.url set")
    engine = create_engine_for(url)
    try:
        with engine.begin() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported for costwarden")
run_migrations_online()
