"""Engine, sessions and the unit of work.

Service functions take a Session and never commit; the entry points (API, views, CLI) open a
unit of work around them. On SQLite every write transaction starts with BEGIN IMMEDIATE so that
concurrent writers queue on the busy timeout instead of failing with "database is locked" half
way through (SQLite has no SELECT ... FOR UPDATE).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, cast

from flask import Flask, current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import Engine, Executable, Table, bindparam, create_engine, event, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Compiled, Connection
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ClauseElement

from core.errors import DomainError

SQLITE_BUSY_TIMEOUT_MS = 30_000


class OutcomeUnknown(DomainError):
    """The COMMIT was sent but its answer never came (the connection dropped): the transaction may
    or may not have taken effect. Never report that as "nothing written"."""

    status = 503
    code = "outcome-unknown"
    title = _l("无法确认操作是否已生效")


def commit(session: Session) -> None:
    """Flush, then commit. A failure while flushing is an ordinary error (nothing was written);
    losing the connection during the COMMIT itself leaves the outcome unknown."""
    session.flush()
    try:
        session.commit()
    except (OperationalError, InterfaceError) as error:
        raise OutcomeUnknown(str(_l(
            "提交时与数据库的连接中断，无法确认操作是否已生效。请带同一 Idempotency-Key 重试："
            "若已生效，将返回第一次的结果；未带该键的请求请先查询状态再决定是否重试。"))) from error


class _NoResultRows(logging.Filter):
    """SQL logging (sqlalchemy.engine at DEBUG) prints every fetched row, and rows hold secrets
    (bank signing keys): statements are logged, never what they read (issue 10: no secret in a log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(("Row ", "Col ")))


logging.getLogger("sqlalchemy.engine.Engine").addFilter(_NoResultRows())


def make_engine(url: str, **kwargs: Any) -> Engine:
    # Bound values (passwords' hashes, secrets) never reach SQL logging nor error messages.
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            **kwargs,
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (pysqlite's implicit transactions defer the lock).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


def table_of(model: type[Any]) -> Table:
    """A mapped class's table, typed as a Table (for Core statements built once at import)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


def column_binds(table: Table) -> dict[str, Any]:
    """Every column but the generated key as a bind parameter named as the column: the VALUES of an
    INSERT that must be given each column (leaving one out is an error, not a NULL)."""
    return {c.key: bindparam(c.key, type_=c.type) for c in table.c if not c.primary_key}


# Where a hot statement runs: a session (its connection, beginning its transaction if need be) or,
# on a path that runs many of them, that connection itself (Session.connection() costs ~40 µs a call).
Executor = Session | Connection


def connection_of(executor: Executor) -> Connection:
    return executor if isinstance(executor, Connection) else executor.connection()


class HotStatement:
    """A Core statement of the money path (run for every payment), compiled once per dialect.

    On psycopg it runs on the DBAPI cursor of the session's connection, in the session's
    transaction, as a server-side prepared statement. SQLAlchemy's per-execution work (execution
    context, result set-up, cursor description) costs ~0.14 ms of CPU a statement here against
    ~0.08 ms for the cursor itself (bench/RESULTS-payments.md), and a confirmation runs about nine.
    Driver errors still go through SQLAlchemy's handling: wrapped in sqlalchemy.exc, and a lost
    connection is invalidated (the API answers 503). Parameters get the column types' bind
    processors; result rows come back as the driver gives them (tuples), so a hot statement
    should return plain columns (numbers, text, dates), not ones that need result processing.

    On other drivers (SQLite), and on any engine with connection event listeners (tests that
    record the statements or inject failures), it is an ordinary Connection.execute: the same SQL,
    seen by the listeners."""

    def __init__(self, build: Executable | Callable[[str], Executable]) -> None:
        """`build`: the statement, or a function of the dialect name that builds it (for
        dialect-specific constructs such as INSERT … ON CONFLICT)."""
        self._build = build
        self._statements: dict[str, Executable] = {}
        self._compiled: dict[str, tuple[str, Compiled, dict[str, Callable[[Any], Any]]]] = {}

    @classmethod
    def insert(cls, table: Table, *, on_conflict_do_nothing: bool = False) -> HotStatement:
        """INSERT of every column but the generated key, each a bind parameter named as the column
        (so leaving one out is an error, not a NULL), RETURNING the key. `on_conflict_do_nothing`:
        a row that would break a unique constraint or index is not written and no error is raised
        (the transaction stays usable); it returns no row."""

        def build(dialect: str) -> Executable:
            values = column_binds(table)
            if on_conflict_do_nothing:
                dml = postgresql.insert if dialect == "postgresql" else sqlite.insert
                return dml(table).values(values).on_conflict_do_nothing().returning(*table.primary_key.columns)
            return insert(table).values(values).returning(*table.primary_key.columns)

        return cls(build)

    def statement(self, dialect: str) -> Executable:
        statement = self._statements.get(dialect)
        if statement is None:
            statement = self._build if isinstance(self._build, Executable) else self._build(dialect)
            self._statements[dialect] = statement
        return statement

    def rows(self, executor: Executor, params: Mapping[str, Any] | None = None) -> Sequence[Sequence[Any]]:
        connection = connection_of(executor)
        dialect = connection.dialect
        if dialect.driver != "psycopg" or connection._has_events or connection.engine._has_events:
            result = connection.execute(self.statement(dialect.name), dict(params or {}))
            return result.all() if result.returns_rows else ()
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            statement = cast(ClauseElement, self.statement(dialect.name)).compile(dialect=dialect)
            compiled = (statement.string, statement, dict(statement._bind_processors))  # type: ignore[attr-defined]
            self._compiled[dialect.name] = compiled
        sql, statement, processors = compiled
        values = dict(statement.construct_params(params) or {})
        for key, process in processors.items():
            values[key] = process(values[key])
        return _run_on_cursor(connection, sql, values)

    def first(self, executor: Executor, params: Mapping[str, Any] | None = None) -> Sequence[Any] | None:
        rows = self.rows(executor, params)
        return rows[0] if rows else None

    def scalar(self, executor: Executor, params: Mapping[str, Any] | None = None) -> Any:
        row = self.first(executor, params)
        return None if row is None else row[0]


def _run_on_cursor(connection: Connection, sql: str, values: dict[str, Any]) -> Sequence[Sequence[Any]]:
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, values, prepare=True)
        return cursor.fetchall() if cursor.description is not None else ()
    except connection.dialect.loaded_dbapi.Error as error:
        # Raises the wrapped error; a lost connection is invalidated as on any other statement.
        connection._handle_dbapi_exception(error, sql, values, cursor, None)
    finally:
        cursor.close()


def is_sqlite(session_or_engine: Session | Engine) -> bool:
    bind = session_or_engine.get_bind() if isinstance(session_or_engine, Session) else session_or_engine
    return bind.dialect.name == "sqlite"


class Database:
    """The app's engine and session factories, kept in app.extensions['db']."""

    def __init__(self, url: str, **engine_options: Any) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_options)
        self.write_sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Reads on SQLite take no write lock, so pages stay fast while a cashier writes.
        self.read_sessions = sessionmaker(
            self.engine.execution_options(sqlite_begin="DEFERRED"), expire_on_commit=False
        )
        # The request's one transaction while shared_unit_of_work() runs (see request_unit_of_work).
        self.shared: ContextVar[Session | None] = ContextVar(f"feeservice_shared_uow_{id(self)}", default=None)

    @contextmanager
    def unit_of_work(self) -> Iterator[Session]:
        """One write transaction: commit on success, roll back on any error."""
        session = self.write_sessions()
        try:
            yield session
            commit(session)
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def shared_unit_of_work(self) -> Iterator[Session]:
        """One write transaction that every request_unit_of_work() inside it joins instead of
        opening its own: so an idempotency key's stored result commits with the work it records."""
        if self.shared.get() is not None:
            raise RuntimeError("shared_unit_of_work() does not nest")
        with self.unit_of_work() as session:
            token = self.shared.set(session)
            try:
                yield session
            finally:
                self.shared.reset(token)

    @contextmanager
    def request_unit_of_work(self) -> Iterator[Session]:
        """The entry points' unit of work: the enclosing shared one (which commits or rolls back
        for everything), or a transaction of its own."""
        joined = self.shared.get()
        if joined is not None:
            yield joined
            return
        with self.unit_of_work() as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Session]:
        session = self.read_sessions()
        try:
            yield session
        finally:
            # close() ends the transaction without expiring what was loaded, so views may
            # serialise the objects after the block.
            session.close()


def init_db(app: Flask) -> Database:
    # DATABASE_ENGINE_OPTIONS (optional): extra create_engine() arguments, e.g. a pool size for
    # many threads sharing one process.
    database = Database(app.config["DATABASE_URL"], **(app.config.get("DATABASE_ENGINE_OPTIONS") or {}))
    app.extensions["db"] = database
    return database


def get_db() -> Database:
    db: Database = current_app.extensions["db"]
    return db


def unit_of_work() -> Any:
    return get_db().request_unit_of_work()


def reading() -> Any:
    return get_db().reading()
