"""WAL checkpoints off the writer's path: a background thread copies committed pages into the database file.

SQLite's automatic checkpoint runs inside whichever COMMIT pushes the write-ahead log past its limit, so that one
caller waits for the copy and its fsyncs: 0.2-0.3 s on this project's 2-core test machine, against ~70 ms for the
store's whole share of adding 1,000 memories. Here our connections ask for a checkpoint after each commit
(`Checkpointer.poke`), and one thread per open store runs SQLite's PASSIVE checkpoint, which takes no lock that a
writer or reader waits on, at most every `CHECKPOINT_INTERVAL` seconds. SQLite's own automatic checkpoint stays as
a backstop at `BACKSTOP_PAGES`, for a log that grows faster than the thread keeps up with (or a process that does
not run one). Durability is unchanged: a commit is in the log either way; a checkpoint interrupted by a crash is
redone from the log on the next open.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import urllib.parse
from pathlib import Path

log = logging.getLogger(__name__)

#: The least time between two background checkpoints, in seconds (the commits in between share one).
CHECKPOINT_INTERVAL = 1.0
#: SQLite's automatic checkpoint, inside a COMMIT, only past this many log pages (~40 MB at 4 KB pages).
BACKSTOP_PAGES = 10_000


class Checkpointer:
    """One background thread checkpointing one database file's WAL after commits; started by the first poke."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.checkpoints = 0  # completed background checkpoints (for tests and diagnostics)

    def poke(self) -> None:
        """A transaction committed: checkpoint soon."""
        if self._stop.is_set():
            return
        if self._thread is None or self._pid != os.getpid():  # a forked child starts its own thread
            with self._lock:
                if self._thread is None or self._pid != os.getpid():
                    self._pid = os.getpid()
                    self._thread = threading.Thread(target=self._run, name="mark-wal-checkpoint", daemon=True)
                    self._thread.start()
        self._wake.set()

    def close(self) -> None:
        """Stop the thread after any checkpoint it is running (the last connection's close checkpoints the rest)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=10)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stop.is_set():
                self._wake.wait()
                if self._stop.is_set():
                    break
                self._wake.clear()
                try:
                    if conn is None:
                        uri = f"file:{urllib.parse.quote(str(self.path))}?mode=rw"  # never creates a file
                        conn = sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                except sqlite3.Error as exc:  # the backstop checkpoints instead; the next poke tries again
                    log.debug("background WAL checkpoint skipped: %s", exc)
                self._stop.wait(CHECKPOINT_INTERVAL)
        finally:
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()


def truncate_wal(conn: sqlite3.Connection) -> bool:
    """Copy the whole WAL into the database file and empty it (after a purge or forget, so the log keeps no earlier
    image of a deleted row); False if a reader in another connection kept SQLite from finishing (SQLite's busy
    timeout has passed by then), in which case the log still holds those pages."""
    busy, _log_pages, _copied = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return busy == 0


def wal_kept_warning(file_name: str, what: str) -> str:
    """What to tell the user when `truncate_wal` could not empty the log of ``file_name`` after deleting ``what``."""
    return (
        f"the deleted {what} are zeroed in {file_name}, but another connection was reading it, so its write-ahead log "
        f"({file_name}-wal) still holds earlier copies of their pages: the next purge or forget empties it once no "
        "other process has the store open"
    )
