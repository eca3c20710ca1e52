"""The database connection of the run store: its URL, engine, migrations and redaction.

The URL comes from ``DISTILLERY_DB_URL`` (default: a SQLite file in the data directory).
SQLite gets WAL, foreign keys and a busy timeout on every connection, and connections of
the write engine take the write lock up front (``BEGIN IMMEDIATE``) so that concurrent
writers wait for each other instead of failing with "database is locked". A PostgreSQL URL
(``postgresql+psycopg://user:password@host/db``; plain ``postgresql://`` means the same)
is what a team shares.

The database password never leaves this module and `core.store`: URLs are shown through
`redacted_url`, and error sentences are scrubbed of the secrets `secrets_of` finds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from core import paths
from core.settings import DB_URL_ENV

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
BUSY_TIMEOUT_S = 10.0

# Connections created through the write engine carry this execution option; the SQLite
# "begin" hook turns it into BEGIN IMMEDIATE.
WRITE_OPTION = "distillery_write"
# Query parameters of a database URL whose values are credentials.
_SECRET_PARAM = re.compile(r"pass|pwd|secret|token|key", re.IGNORECASE)


def database_url() -> str:
    """The configured database URL: ``DISTILLERY_DB_URL`` or the default SQLite file."""
    url = os.environ.get(DB_URL_ENV, "").strip()
    return url or f"sqlite:///{paths.default_db_path()}"


def redacted_url(url: str | None = None) -> str:
    """The URL with its password masked: the only form that may be logged or shown."""
    try:
        parsed = make_url(url or database_url())
        # libpq and most drivers also take the password as a query parameter
        # (``postgresql://host/db?password=...``), which hide_password does not cover.
        secret = {k: "***" for k in parsed.query if _SECRET_PARAM.search(k)}
        if secret:
            parsed = parsed.update_query_dict(secret)
        return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")
    except Exception:  # an unparseable URL may still contain a password; show nothing
        return "<unparseable database URL>"


def _is_memory_sqlite(database: str | None) -> bool:
    return not database or database == ":memory:" or database.startswith("file::memory:")


def _sqlite_path(database: str, query: Any) -> Path:
    """The file of an on-disk SQLite database. With ``?uri=true`` the database is a
    ``file:`` URI (``sqlite:///file:/data/runs.db?uri=true``), whose path is after the
    scheme; a plain path otherwise."""
    if str(query.get("uri", "")).lower() in ("true", "1") and database.startswith("file:"):
        return Path(unquote(urlsplit(database).path))
    return Path(database)


def make_engine(url: str) -> Engine:
    """An engine with a connection pool; SQLite connections get the pragmas they need."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        # psycopg 3 is the driver we install and test; SQLAlchemy's default is psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)

    in_memory = _is_memory_sqlite(parsed.database)
    if in_memory:
        # One shared connection, or every pool checkout would see a new empty database.
        engine = create_engine(
            parsed, poolclass=StaticPool, connect_args={"check_same_thread": False}
        )
    else:
        _sqlite_path(parsed.database, parsed.query).expanduser().parent.mkdir(
            parents=True, exist_ok=True
        )
        engine = create_engine(
            parsed, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_S}
        )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let the "begin" hook below emit BEGIN: pysqlite's own implicit transactions
        # start too late (at the first write) to take the write lock up front.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if not in_memory:
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A deferred transaction that reads and then writes cannot wait for a concurrent
        # writer (SQLite answers "database is locked" at once); IMMEDIATE waits up to
        # busy_timeout instead.
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


@contextmanager
def migration_connection(engine: Engine, **options: Any) -> Iterator[Connection]:
    """A connection in a transaction for Alembic, with SQLite's foreign keys off meanwhile.

    SQLite alters a table by rebuilding it (Alembic's batch mode): a copy is filled, the
    old table dropped and the copy renamed. With foreign keys on, that DROP cascades:
    every run's epochs, results and artifacts would be deleted and teacher links nulled.
    The pragma only takes effect outside a transaction, so it is set on the raw connection
    before BEGIN, and the keys are checked (``foreign_key_check``) before the commit.
    """
    with engine.connect() as connection:
        sqlite = engine.dialect.name == "sqlite"
        raw = connection.connection.dbapi_connection
        if sqlite:
            raw.execute("PRAGMA foreign_keys = OFF")
        try:
            with connection.execution_options(**options).begin():
                yield connection
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").first()
                    if broken is not None:
                        raise IntegrityError(
                            "PRAGMA foreign_key_check", None, ValueError(f"dangling key {broken}")
                        )
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys = ON")


def alembic_config() -> Config:
    """Alembic's configuration for the migrations shipped in ``migrations/``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str | None:
    """The newest schema revision this code knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


def describe_error(exc: SQLAlchemyError) -> str:
    """The driver's own message, first line only (an error is always one sentence)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return first_line(exc.orig)
    return first_line(exc)


def secrets_of(url: str) -> list[str]:
    """The password and credential-like query values of a URL, to scrub from messages."""
    try:
        parsed = make_url(url)
    except Exception:  # unparseable: it may hold a password anywhere, so hide all of it
        return [url]
    found = [parsed.password] if parsed.password else []
    for key, value in parsed.query.items():
        if _SECRET_PARAM.search(key):
            found += [value] if isinstance(value, str) else list(value)
    return [str(s) for s in found if s]
