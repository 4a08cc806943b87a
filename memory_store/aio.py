"""AsyncMemoryStore: the async API, derived from MemoryStore rather than written twice.

Each coroutine runs the sync method in a worker thread (`asyncio.to_thread`): SQLite, chromadb and torch
are blocking libraries, so a thread is what an async implementation would use anyway, and the logic exists
once. `tests/memory_store/test_async_parity.py` checks that every public method has its async twin.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from typing import Any

from memory_store.store import MemoryStore

#: Methods that stay synchronous on the async class (cheap, no I/O).
_SYNC_ONLY = {"close", "embedder"}


def public_methods() -> list[str]:
    return [
        name
        for name, fn in inspect.getmembers(MemoryStore, inspect.isfunction)
        if not name.startswith("_") and name not in _SYNC_ONLY
    ]


class AsyncMemoryStore:
    """Async twin of MemoryStore: same constructor, same methods, each awaited."""

    def __init__(self, *args: Any, store: MemoryStore | None = None, **kwargs: Any) -> None:
        self.sync = store if store is not None else MemoryStore(*args, **kwargs)

    @property
    def settings(self):
        return self.sync.settings

    def close(self) -> None:
        self.sync.close()

    async def __aenter__(self) -> AsyncMemoryStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _async_method(name: str):
    fn = getattr(MemoryStore, name)

    @functools.wraps(fn)
    async def method(self: AsyncMemoryStore, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(getattr(self.sync, name), *args, **kwargs)

    return method


for _name in public_methods():
    setattr(AsyncMemoryStore, _name, _async_method(_name))
