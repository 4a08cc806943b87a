"""memory_store.pg_dev: the local Postgres that `mark memory pg-dev` and `mark bench store` start and stop."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from memory_store import pg_dev

pytestmark = pytest.mark.postgres


def test_a_server_started_in_this_process_stops_and_starts_again():
    """The bench starts its own server and stops it when it ends: the stop must stop it (it once left one running
    per bench run, because pgserver handed back the start's keep-running handle)."""
    where = Path(tempfile.mkdtemp(prefix="mark-pgdev-")) / "pg"  # outside pytest's root (see tests/pg_fixtures.py)
    try:
        for _ in range(2):
            url = pg_dev.start(where)
            with psycopg.connect(url) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            assert pg_dev.stop(where) is True
            assert not (where / "postmaster.pid").exists()  # Postgres removes it when it has shut down
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(url, connect_timeout=3)
        assert pg_dev.stop(where.parent / "never-started") is False
    finally:
        if (where / "postmaster.pid").exists():
            pg_dev.stop(where)
        shutil.rmtree(where.parent, ignore_errors=True)
