"""The local server's idle watchdog, on a stand-in ASGI app instead of llama.cpp (the real one: test_local_llm.py).

No timing assertions: the tests wait (with generous limits) for states, never measure how long they took.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import types
from pathlib import Path

import httpx
from filelock import FileLock

from mark_agents.local_llm_server import IdleWatch, _send_json, watchdog

GENEROUS_S = 30.0


async def stand_in(scope, receive, send) -> None:
    """What llama.cpp's app would answer, minus the model."""
    await _send_json(send, {"object": "list", "data": []})


async def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + GENEROUS_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        await asyncio.sleep(0.02)


async def test_requests_and_touch_reset_the_idle_clock_but_asking_for_it_does_not() -> None:
    watch = IdleWatch(stand_in)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=watch), base_url="http://local") as http:
        await wait_until(lambda: watch.idle_s() > 0.5, "some idle time")
        seen = (await http.get("/mark/idle")).json()
        assert seen["idle_s"] > 0.5 and seen["active"] == 0 and seen["pid"] == os.getpid()
        assert watch.idle_s() > 0.5  # asking did not count as use
        assert (await http.get("/v1/models")).json() == {"object": "list", "data": []}
        assert watch.idle_s() < seen["idle_s"]  # a real request did
        await wait_until(lambda: watch.idle_s() > 0.5, "idle again")
        before = watch.idle_s()
        await http.get("/mark/touch")
        assert watch.idle_s() < before


async def test_watchdog_waits_for_the_registry_lock_then_leaves_the_registry_and_stops(tmp_path: Path) -> None:
    watch = IdleWatch(stand_in)
    state, lock = tmp_path / "k.json", tmp_path / "k.lock"
    state.write_text(json.dumps({"pid": os.getpid(), "port": 1}))
    server = types.SimpleNamespace(should_exit=False)
    limit = 0.1
    with FileLock(str(lock)):  # a caller is handing this server out: it must not stop now
        task = asyncio.create_task(watchdog(server, watch, limit, state, lock))
        await wait_until(lambda: watch.idle_s() > 10 * limit, "idle well past the limit")
        assert not server.should_exit and state.exists()
    await wait_until(lambda: server.should_exit, "the watchdog stopping the server")
    await asyncio.wait_for(task, GENEROUS_S)
    assert not state.exists()


async def test_watchdog_leaves_an_entry_that_names_another_process(tmp_path: Path) -> None:
    watch = IdleWatch(stand_in)
    state, lock = tmp_path / "k.json", tmp_path / "k.lock"
    state.write_text(json.dumps({"pid": os.getpid() + 1_000_000, "port": 1}))  # a newer server took the entry
    server = types.SimpleNamespace(should_exit=False)
    await asyncio.wait_for(watchdog(server, watch, 0.05, state, lock), GENEROUS_S)
    assert server.should_exit and state.exists()
