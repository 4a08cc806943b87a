"""The agent's sync API is written out beside the async one: one twin per coroutine, same signature."""

from __future__ import annotations

import inspect

from mark_agents.agent import SYNC_TWINS, MemoryAgent


def test_every_async_method_has_a_sync_twin_with_the_same_signature():
    coroutines = {
        name[1:]
        for name, fn in inspect.getmembers(MemoryAgent, inspect.iscoroutinefunction)
        if name.startswith("a") and not name.startswith("_") and name != "aclose"
    }
    assert coroutines == set(SYNC_TWINS)
    for name in SYNC_TWINS:
        sync, coro = getattr(MemoryAgent, name), getattr(MemoryAgent, "a" + name)
        assert not inspect.iscoroutinefunction(sync), name
        assert inspect.signature(sync) == inspect.signature(coro), name
        assert sync.__doc__ == f"Sync :meth:`a{name}`.", name
