"""The async API is derived from the sync one: same methods, same results."""

from __future__ import annotations

import inspect

from memory_store import AsyncMemoryStore, MemoryStore, StoreSettings
from memory_store.aio import public_methods


def test_every_public_method_has_an_async_twin():
    names = public_methods()
    assert {
        "add",
        "add_many",
        "search",
        "list",
        "history",
        "purge_user",
        "export_jsonl",
        "import_jsonl",
        "check",
        "rebuild",
        "get",
        "update",
        "delete",
        "supersede",
        "confirm",
    } <= set(names)
    for name in names:
        method = getattr(AsyncMemoryStore, name)
        assert inspect.iscoroutinefunction(method), name
        assert inspect.signature(method) == inspect.signature(getattr(MemoryStore, name)), name


async def test_async_store_behaves_like_sync(tmp_path, embedder):
    store = AsyncMemoryStore(StoreSettings(home=tmp_path / "h"), embedder=embedder)
    m = await store.add("My dog is called Biscuit.", "alice")
    hits = await store.search("dog's name", "alice")
    assert hits[0].memory.id == m.id
    assert (await store.get(m.id, "alice")).text == m.text
    assert (await store.purge_user("alice")).memories == 1
    assert (await store.list("alice")).total == 0
    store.close()
