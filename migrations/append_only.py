"""Append-only rules as database triggers, for SQLite and PostgreSQL alike (used by migrations).

Facts are never rewritten (ARCHITECTURE.md): a table may refuse DELETE and UPDATE outright, or
refuse UPDATEs that change its fact columns, or move a status other than along its state
machine.
"""

from __future__ import annotations

from alembic import op


def _dialect() -> str:
    return str(op.get_bind().dialect.name)


def _ensure_pg_refuse_function() -> None:
    op.execute(
        "CREATE OR REPLACE FUNCTION feesvc_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION 'feeservice: % on % is not allowed (append-only)', TG_OP, "
        "TG_TABLE_NAME USING ERRCODE = 'restrict_violation'; END $$"
    )


def refuse(table: str, *operations: str) -> None:
    """The table refuses these operations (UPDATE, DELETE) entirely."""
    if _dialect() == "postgresql":
        _ensure_pg_refuse_function()
        op.execute(f"CREATE TRIGGER {table}_append_only BEFORE {' OR '.join(operations)} ON {table} "
                   "FOR EACH ROW EXECUTE FUNCTION feesvc_refuse_change()")
        return
    for operation in operations:
        op.execute(f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                   f"BEGIN SELECT RAISE(ABORT, 'feeservice: {operation} on {table} is not allowed "
                   "(append-only)'); END")


def guard_update(table: str, name: str, facts: tuple[str, ...], transitions: dict[str, tuple[str, ...]]) -> None:
    """UPDATEs may not change `facts`, and may move `status` only along `transitions`."""
    allowed = " OR ".join(
        [f"(OLD.status = '{source}' AND NEW.status IN ({', '.join(repr(t) for t in targets)}))"
         for source, targets in transitions.items() if targets] + ["OLD.status = NEW.status"]
    )
    if _dialect() == "postgresql":
        changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in facts)
        op.execute(
            f"CREATE FUNCTION feesvc_guard_{name}() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN IF ({changed}) OR NOT ({allowed}) THEN RAISE EXCEPTION "
            f"'feeservice: facts of {table} are immutable and its status moves forward only' "
            "USING ERRCODE = 'restrict_violation'; END IF; RETURN NEW; END $$"
        )
        op.execute(f"CREATE TRIGGER {name} BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION "
                   f"feesvc_guard_{name}()")
        return
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in facts)
    op.execute(f"CREATE TRIGGER {name} BEFORE UPDATE ON {table} WHEN ({changed}) OR NOT ({allowed}) "
               f"BEGIN SELECT RAISE(ABORT, 'feeservice: facts of {table} are immutable and its status "
               "moves forward only'); END")


def drop(table: str, name: str) -> None:
    if _dialect() == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    else:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")


def refuse_truncate(*tables: str) -> None:
    """PostgreSQL: the tables refuse TRUNCATE, which row-level DELETE triggers never see (a
    statement-level trigger). SQLite has no TRUNCATE: its DELETE triggers cover `DELETE FROM t`."""
    if _dialect() != "postgresql":
        return
    _ensure_pg_refuse_function()
    for table in tables:
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION feesvc_refuse_change()")


def allow_truncate(*tables: str) -> None:
    if _dialect() == "postgresql":
        for table in tables:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
