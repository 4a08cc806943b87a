"""A real Postgres (with pgvector) for the `postgres` tests: one private server per test session, started by the
PyPI wheel `pgserver` in a temporary directory, and a fresh database per test (copied from a migrated template).

Never skipped: without pgserver (or psycopg) the tests fail and say what to install.
"""

from __future__ import annotations

import itertools
import warnings

import pytest

TEMPLATE = "mark_template"
_numbers = itertools.count()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """The admin URL of a private Postgres server, stopped at the end of the session."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pgserver warns that XDG_RUNTIME_DIR is unset (harmless)
        try:
            import pgserver
            import psycopg

            from memory_store.postgres_backend import PostgresBackend
        except ImportError as exc:
            pytest.fail(f"the postgres tests need the dev extra (pgserver, psycopg): pip install -e '.[dev]' ({exc})")
        server = pgserver.get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="stop")
    url = server.get_uri()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    PostgresBackend(server.get_uri(TEMPLATE)).close()  # migrated once; each test copies it
    yield server
    server.cleanup()


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
