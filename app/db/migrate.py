"""Apply Alembic migrations from code, and check a database is at the head.

``plateau db upgrade``, ``plateau up`` and the tests call these; they find
the migration scripts through the installed ``migrations`` package, so they
work from any working directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import migrations
from app.db.session import ensure_sqlite_folder

logger = logging.getLogger(__name__)


class SchemaNotCurrent(RuntimeError):
    """The database is not at the newest migration."""


def _script_location() -> str:
    # ``__path__``, not ``__file__``: an editable install may make it a namespace
    return str(Path(next(iter(migrations.__path__))))


def alembic_config(url: str) -> Config:
    """An Alembic config for ``url`` that needs no ``alembic.ini``."""
    config = Config()
    config.set_main_option("script_location", _script_location())
    config.attributes["url"] = url
    config.attributes["configure_logger"] = False
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision``."""
    logger.info("migrating database up to %s", revision)
    ensure_sqlite_folder(url)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``base``: empty)."""
    logger.info("migrating database down to %s", revision)
    command.downgrade(alembic_config(url), revision)


def head_revision() -> str:
    heads = ScriptDirectory.from_config(alembic_config("")).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"the migrations have {len(heads)} heads; merge them")
    return heads[0]


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def require_current(engine: sa.Engine) -> None:
    """Raise SchemaNotCurrent unless the database is at the newest migration."""
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaNotCurrent(
            f"the database schema is at {current or 'nothing'}, the code needs "
            f"{head}: run `plateau db upgrade`"
        )
