"""Files written whole or not at all, and never left behind half-written with a user's data in them."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from memory_store.errors import InvalidInput


@contextlib.contextmanager
def private_output(path: str | Path) -> Iterator[IO[str]]:
    """A text file for ``path``, written to a temporary file beside it and renamed over ``path`` at the end.

    The temporary file is readable by its owner only (an export holds a user's memories) and removed on any
    failure, so an interrupted or refused export leaves nothing behind. A directory is refused up front.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise InvalidInput(f"{path} is a directory; give the name of a file to write")
    parent = path.parent
    if not parent.is_dir():
        raise InvalidInput(f"cannot write {path}: {parent} is not an existing directory")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
