"""Migrations are the only way the schema is made, and they match the models."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from app.db import migrate
from app.db.models import Base
from app.db.session import make_engine


def differences(url: str) -> list:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True}
            )
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


@pytest.fixture
def empty_pg(pg_server_url):
    """The session's database, emptied to no schema at all for this test."""
    migrate.downgrade(pg_server_url, "base")
    yield pg_server_url
    migrate.upgrade(pg_server_url)


def test_models_and_migrations_agree_on_sqlite(sqlite_url):
    assert differences(sqlite_url) == []


def test_models_and_migrations_agree_on_postgresql(pg_migrated):
    assert differences(pg_migrated) == []


def test_migrations_go_down_and_up_again_on_postgresql(empty_pg):
    engine = sa.create_engine(empty_pg)
    try:
        assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}

        migrate.upgrade(empty_pg)
        tables = set(sa.inspect(engine).get_table_names())
        assert {"tenants", "api_keys", "jobs", "curve_points"} <= tables
        migrate.require_current(engine)

        migrate.downgrade(empty_pg, "base")
        assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()


def test_the_service_refuses_a_database_that_is_not_migrated(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    try:
        with pytest.raises(migrate.SchemaNotCurrent, match="plateau db upgrade"):
            migrate.require_current(engine)
    finally:
        engine.dispose()


def test_timestamps_are_timezone_aware_on_both_databases(database_url):
    from app.db.models import Tenant, utcnow
    from app.db.session import session_scope

    with session_scope(database_url) as session:
        session.add(Tenant(name="tz"))
    with session_scope(database_url) as session:
        tenant = session.scalar(sa.select(Tenant).where(Tenant.name == "tz"))
        assert tenant.created_at.tzinfo is not None
        assert abs((utcnow() - tenant.created_at).total_seconds()) < 60


def test_constraint_names_follow_the_convention(pg_migrated):
    engine = sa.create_engine(pg_migrated)
    try:
        inspector = sa.inspect(engine)
        assert inspector.get_pk_constraint("jobs")["name"] == "pk_jobs"
        uniques = {u["name"] for u in inspector.get_unique_constraints("jobs")}
        assert "uq_jobs_tenant_id_idempotency_key" in uniques
        checks = {c["name"] for c in inspector.get_check_constraints("jobs")}
        assert {"ck_jobs_status", "ck_jobs_counters"} <= checks
    finally:
        engine.dispose()
