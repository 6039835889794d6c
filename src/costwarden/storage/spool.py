"""The ledger's spool: rows the database could not take, kept on local disk until it can.

When a batch of ledger rows cannot be written (the database is down, restarting, out of
reach), :class:`~costwarden.storage.ledger.LedgerWriter` appends it here and goes on serving;
it replays the spool into the database once the database answers again. Rules:

- **One file per process**, ``ledger-<host>-<pid>-<random>.spool`` in the spool directory,
  created only when first needed, under a temporary name, locked (``flock``, exclusive) and
  then renamed into place, so no other process can see it unlocked. The lock is held while
  the process lives; the kernel drops it when the process dies, however it dies.
- **Append-only, one JSON array per line**: the driver parameters of one row, as the
  writer's INSERT binds them (a Decimal and a datetime are tagged objects: JSON has neither).
  A batch is one ``write`` of whole lines followed by ``fsync`` (and an ``fsync`` of the
  directory when the file is new), so when :meth:`LedgerSpool.append` returns the rows are
  on stable storage: in durable mode a request's response waits for exactly that.
- **Replay is idempotent**: the ledger's INSERT is ``ON CONFLICT (request_id) DO NOTHING``,
  so a row replayed twice (a replay interrupted by a crash and run again, or a batch whose
  commit succeeded but whose acknowledgement was lost before it was spooled) is one row.
  A file is removed only after every one of its rows is committed.
- **Files of dead processes are adopted**: a replay also takes every spool file in the
  directory whose lock it can get (its owner is gone: SIGKILL, a crash, a restart) and
  replays it the same way. A restarted gateway replays them before it serves.
- A last line cut short (the process died inside a write, before its fsync returned, so no
  response waited for it) is dropped with a warning; any other line that cannot be read is
  kept in ``<file>.rejected`` for an operator and logged, never silently lost.

Everything here blocks (file I/O, fsync, the replay's INSERTs): the writer calls it in a
worker thread, from its one flusher task, so calls never overlap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from costwarden.core.errors import StorageError
from costwarden.storage.ledger_rows import COLUMN_COUNT

logger = logging.getLogger(__name__)

SUFFIX = ".spool"
_TEMP_PREFIX = ".new-"
_DECIMAL, _DATETIME = "$decimal", "$datetime"


# --------------------------------------------------------------------------- the line codec


def _tag(value: Any) -> Any:
    if type(value) is Decimal:
        return {_DECIMAL: format(value, "f")}
    if type(value) is datetime:
        return {_DATETIME: value.isoformat()}
    raise TypeError(f"a ledger parameter of type {type(value).__name__} cannot be spooled")


def encode_row(params: list[Any]) -> bytes:
    """One row's driver parameters as a line of JSON (ending in a newline)."""
    return orjson.dumps(
        params, default=_tag, option=orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_APPEND_NEWLINE
    )


def _untag(value: Any) -> Any:
    if type(value) is dict:
        if _DECIMAL in value:
            return Decimal(value[_DECIMAL])
        if _DATETIME in value:
            return datetime.fromisoformat(value[_DATETIME])
        raise ValueError("an unknown tagged value")
    return value


def decode_row(line: bytes) -> list[Any]:
    """The parameters :func:`encode_row` wrote; ValueError for a line that is not one."""
    params = orjson.loads(line)
    if type(params) is not list:
        raise ValueError("a spooled row is a JSON array")
    if len(params) > COLUMN_COUNT:
        raise ValueError("a spooled row has more parameters than the ledger has columns")
    # A row spooled by an older version lacks the columns added since (nullable ones).
    return [_untag(value) for value in params] + [None] * (COLUMN_COUNT - len(params))


# --------------------------------------------------------------------------- the files


@dataclasses.dataclass(slots=True)
class _Held:
    """A spool file this process holds the lock of."""

    path: Path
    fd: int
    rows: int = 0  # rows in it (those of an adopted file: counted when read)


def _lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LedgerSpool:
    """This process's spool file and the replay of every spool file it can lock.

    ``depth`` is the rows appended and not yet replayed (those of adopted files while they
    are being replayed). ``rows_per_commit``: how many rows a replay commits at once.
    """

    def __init__(self, directory: Path | str, *, rows_per_commit: int = 1000) -> None:
        if rows_per_commit < 1:
            raise StorageError("rows_per_commit must be >= 1")
        self.directory = Path(directory)
        self.rows_per_commit = rows_per_commit
        self._own: _Held | None = None
        self.depth = 0
        #: rows replayed into the database since the process started
        self.replayed = 0

    def __repr__(self) -> str:
        return f"LedgerSpool({str(self.directory)!r}, depth={self.depth})"

    # ---------------------------------------------------------------- appending

    def append(self, rows: list[list[Any]]) -> None:
        """Append ``rows`` (driver parameters) and return once they are on stable storage.

        StorageError when they could not be written (no room, no directory, read-only...):
        then nothing is counted, and the caller keeps them.
        """
        data = b"".join(map(encode_row, rows))
        try:
            held = self._own if self._own is not None else self._create()
            # One write of whole lines at the end (O_APPEND); a short write is finished by
            # the loop, so the lines stay whole unless the process dies inside it.
            view = memoryview(data)
            while view:
                view = view[os.write(held.fd, view) :]
            os.fsync(held.fd)
        except OSError as exc:
            if self._own is not None:  # the lines may end half-written: start a new file
                self.depth -= self._own.rows  # counted again when it is adopted
                self._release_own()
            raise StorageError(f"the ledger spool could not be written: {exc.strerror}") from exc
        held.rows += len(rows)
        self.depth += len(rows)

    def _create(self) -> _Held:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"ledger-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        temporary = self.directory / f"{_TEMP_PREFIX}{name}"
        fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        try:
            _lock(fd)  # a new file: nobody else can hold it
            os.rename(temporary, self.directory / name)  # visible only once locked
            _fsync_dir(self.directory)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        self._own = _Held(self.directory / name, fd)
        logger.warning("ledger rows are being spooled to %s", self.directory / name)
        return self._own

    def _release_own(self) -> None:
        if self._own is not None:
            with contextlib.suppress(OSError):
                os.close(self._own.fd)
            self._own = None

    # ---------------------------------------------------------------- replaying

    def pending_files(self) -> list[Path]:
        """Spool files in the directory (this process's and others'), oldest first."""
        try:
            found = [p for p in self.directory.iterdir() if p.name.endswith(SUFFIX)]
        except FileNotFoundError:
            return []
        return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))

    def replay(self, insert: Callable[[list[list[Any]]], int]) -> int:
        """Commit every row of this process's file and of every file it can lock.

        ``insert`` writes one list of rows in one transaction and returns how many were new
        (it raises when the database cannot take them: the replay stops there and the files
        stay, to be replayed again). Returns the rows committed; the spool is empty when it
        returns without raising (but for files locked by live processes).
        """
        total = 0
        own = self._own
        if own is not None:
            total += self._replay_file(own, insert)
            self._remove(own)
            self._own = None
        for path in self.pending_files():
            if own is not None and path == own.path:
                continue
            adopted = self._adopt(path)
            if adopted is None:
                continue
            try:
                count = self._replay_file(adopted, insert)
            except BaseException:
                self.depth -= adopted.rows  # counted again by whoever replays it
                os.close(adopted.fd)  # the lock goes with it: anyone may adopt it later
                raise
            total += count
            self._remove(adopted)
            logger.warning("replayed %d ledger rows spooled by another process (%s)",
                           count, path.name)  # fmt: skip
        return total

    def _adopt(self, path: Path) -> _Held | None:
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:  # replayed and removed meanwhile
            return None
        if not _lock(fd) or os.fstat(fd).st_nlink == 0:  # owner alive, or removed meanwhile
            os.close(fd)
            return None
        return _Held(path, fd)

    def _replay_file(self, held: _Held, insert: Callable[[list[list[Any]]], int]) -> int:
        counted = held is self._own
        committed = 0
        batch: list[list[Any]] = []
        for params in self._rows_of(held):
            if not counted:
                held.rows += 1
                self.depth += 1
            batch.append(params)
            if len(batch) >= self.rows_per_commit:
                insert(batch)
                committed += len(batch)
                batch = []
        if batch:
            insert(batch)
            committed += len(batch)
        self.depth -= held.rows
        self.replayed += committed
        return committed

    def _rows_of(self, held: _Held) -> Iterator[list[Any]]:
        rejected: list[bytes] = []
        with open(held.fd, "rb", closefd=False) as file:
            file.seek(0)
            for line in file:  # read as it goes: a long outage's spool can be large
                if not line.strip():
                    continue
                try:
                    params = decode_row(line)
                except ValueError:
                    if not line.endswith(b"\n"):  # the last line, cut short
                        logger.warning("%s: its last line was cut short (the process died "
                                       "writing it, before any response waited for it): "
                                       "dropped", held.path.name)  # fmt: skip
                    else:
                        rejected.append(line)
                    continue
                yield params
        if rejected:
            kept = held.path.with_name(held.path.name + ".rejected")
            with open(kept, "ab") as out:
                out.write(b"".join(rejected))
                out.flush()
                os.fsync(out.fileno())
            logger.error("%s: %d unreadable lines kept in %s for an operator",
                         held.path.name, len(rejected), kept.name)  # fmt: skip

    def _remove(self, held: _Held) -> None:
        # Unlinked while still locked: an adopter that opened it meanwhile finds no link.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(held.path)
        os.close(held.fd)

    def close(self) -> None:
        """Let go of this process's file (its rows stay, for the next replay by anyone)."""
        self._release_own()
