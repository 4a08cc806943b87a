"""A local Postgres with pgvector for development, offline: the PyPI wheel `pgserver` bundles Postgres 16 with the
pgvector extension and runs a private server in a directory (listening on a Unix socket there, no port).

    export MARK_STORE_URL=$(mark memory pg-dev)     # starts it (or finds it running) and prints its URL
    mark memory pg-dev --stop
"""

from __future__ import annotations

import warnings
from pathlib import Path

from memory_store.errors import StoreError


def _pgserver():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "XDG_RUNTIME_DIR is not set": harmless, pgserver falls back to /tmp
        try:
            import pgserver
        except ImportError:
            raise StoreError("a local Postgres needs pgserver: pip install 'mark-memory[postgres]'") from None
    return pgserver


def start(directory: Path) -> str:
    """Start (or find running) the server whose data lives in ``directory``; returns its connection URL. The server
    keeps running after this process exits."""
    directory = directory.expanduser()
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        server = _pgserver().get_server(directory, cleanup_mode=None)
    except (OSError, AssertionError, RuntimeError) as exc:  # pgserver asserts that the server came up
        raise StoreError(f"cannot start Postgres in {directory}: {exc or type(exc).__name__}") from None
    return server.get_uri()


def stop(directory: Path) -> bool:
    """Stop the server of ``directory``; False when none was set up there.

    pgserver keeps one handle per directory in each process: a handle that `start` made here (the bench starts and
    stops its own server) is the one returned, with the mode it was made with ("keep running"), and its cleanup
    then stopped nothing. So the handle is told to stop whichever process made it."""
    directory = directory.expanduser()
    if not (directory / "PG_VERSION").exists():
        return False
    server = _pgserver().get_server(directory, cleanup_mode="stop")
    server.cleanup_mode = "stop"
    server.cleanup()
    if (directory / "postmaster.pid").exists():  # another process holds a handle on it (pgserver counts them)
        raise StoreError(
            f"the Postgres server in {directory} is still in use by another process (pgserver lists them in "
            ".handle_pids.json there); stop that first"
        )
    return True
