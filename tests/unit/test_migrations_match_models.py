"""The migrations build exactly the schema the models describe (on SQLite, and on PostgreSQL in CI).

A model changed without a migration (or the reverse) works in tests that create tables from
the models, then fails on a real database upgraded by `flask db upgrade`; this catches it here.
"""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

import core.models_registry  # noqa: F401  (every package's tables in the metadata)
from core.models import Base


def test_the_migrated_schema_is_the_models_schema(database_url_factory: Any) -> None:
    engine = create_engine(database_url_factory("migrations_match_models"))
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []
