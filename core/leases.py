"""Is the process that started a piece of work still alive? Leases that die with their process.

A row saying `running` (a scheduler's claim, a reconciliation run) outlives the process that
wrote it when that process is SIGKILLed or its machine loses power. Waiting a fixed time before
taking such work over either waits hours for a dead process or takes work away from a live one
that is merely slow. A lease answers the question directly:

- PostgreSQL: the worker holds a session-level advisory lock `(space, key)` on a connection of
  its own for as long as the work runs. The server drops it the moment that connection ends, so
  whoever obtains the lock knows the holder is gone; whoever cannot knows it is alive, however
  long it has been running.
- SQLite (one machine; the database is a local file): the worker is named `host:pid`; a holder
  on this host is alive while its process exists (a zombie counts as gone). A holder named from
  another host (a file shared over the network) cannot be checked, and the caller's age limit
  decides.

The lease is taken before the row that names the work commits, so no other process ever sees
the row `running` without a live lease behind it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, text

from core.db import Database

#: advisory lock spaces (the first key of pg_advisory_lock(int, int)); distinct from the others
JOB_RUN_SPACE = 0x10B5
RECONCILIATION_RUN_SPACE = 0x5EC1


def this_process() -> str:
    """How a lease holder is named in rows: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Lease:
    """Held while the work runs; release() when it is done (idempotent)."""

    def __init__(self, connection: Connection | None = None, space: int = 0, key: int = 0) -> None:
        self._connection, self._space, self._key = connection, space, key

    def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            # Explicitly: a pooled connection goes back to the pool with its session (and the
            # session's locks) alive.
            connection.execute(text("SELECT pg_advisory_unlock(:space, :key)"),
                               {"space": self._space, "key": self._key})
            connection.close()
        except Exception:  # noqa: BLE001 - a lost connection has released the lock already
            connection.invalidate()
            connection.close()


def uses_advisory_locks(database: Database) -> bool:
    return database.engine.dialect.name == "postgresql"


def acquire_lease(database: Database, space: int, key: int, *, wait: bool) -> Lease | None:
    """The lease on (space, key): waits for it (wait=True) or answers None at once when another
    live process holds it. On SQLite there is nothing to hold: the holder's name is the lease."""
    if not uses_advisory_locks(database):
        return Lease()
    connection = database.engine.connect()
    try:
        # Autocommit: a session-level lock must not sit inside a transaction left open for hours.
        connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        function = "pg_advisory_lock" if wait else "pg_try_advisory_lock"
        got = connection.execute(text(f"SELECT {function}(:space, :key)"), {"space": space, "key": key}).scalar()
    except BaseException:
        connection.close()
        raise
    if wait or got:
        return Lease(connection, space, key)
    connection.close()
    return None


@contextmanager
def leased(database: Database, space: int, key: int) -> Iterator[Lease]:
    lease = acquire_lease(database, space, key, wait=True)
    assert lease is not None
    try:
        yield lease
    finally:
        lease.release()


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed child its parent has not reaped yet is gone for our purpose
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] != "Z"
    except (OSError, IndexError):
        return True


def holder_is_gone(database: Database, space: int, key: int, holder: str | None, since: datetime,
                   now: datetime, age_limit: timedelta | None) -> bool:
    """Whether the process holding the lease on (space, key), named `holder` in the row and
    running since `since`, no longer exists. When that cannot be known (SQLite, another host),
    the work counts as abandoned only once it is older than age_limit (never, without one)."""
    if uses_advisory_locks(database):
        lease = acquire_lease(database, space, key, wait=False)
        if lease is None:
            return False
        lease.release()
        return True
    host, _, pid = (holder or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return not _process_exists(int(pid))
    return age_limit is not None and now - since > age_limit
