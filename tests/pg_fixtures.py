"""A real Postgres (with pgvector) for the `postgres` tests: one private server per test session, started by the
PyPI wheel `pgserver` in a temporary directory, and a fresh database per test (copied from a migrated template).

Never skipped: without pgserver (or psycopg) the tests fail and say what to install.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest

TEMPLATE = "mark_template"
_numbers = itertools.count()


@pytest.fixture(scope="session")
def pg_server():
    """A private Postgres server, stopped and deleted at the end of the session.

    Its directory is not under pytest's temporary root: run as root, pgserver runs the server as another user,
    and a later pytest session makes that root private again (0700), which cuts the server off its files.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pgserver warns that XDG_RUNTIME_DIR is unset (harmless)
        try:
            import pgserver
            import psycopg

            from memory_store.postgres_backend import PostgresBackend
        except ImportError as exc:
            pytest.fail(f"the postgres tests need the dev extra (pgserver, psycopg): pip install -e '.[dev]' ({exc})")
        server = pgserver.get_server(Path(tempfile.mkdtemp(prefix="mark-pg-")) / "data", cleanup_mode="delete")
    url = server.get_uri()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    PostgresBackend(server.get_uri(TEMPLATE)).close()  # migrated once; each test copies it
    yield server
    server.cleanup()
    shutil.rmtree(server.pgdata.parent, ignore_errors=True)


def new_database(server) -> str:
    """A fresh, migrated database on the session's server; returns its URL."""
    import psycopg

    name = f"mark_test_{next(_numbers)}"
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    return server.get_uri(name)


def drop_database(server, url: str) -> None:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def pg_url(pg_server):
    """A fresh database for one test."""
    url = new_database(pg_server)
    yield url
    drop_database(pg_server, url)
