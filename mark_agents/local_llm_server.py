"""The local model server process: llama.cpp's OpenAI-compatible app, plus an idle watchdog.

Run by :class:`mark_agents.local_llm.LocalServer` as ``python -m mark_agents.local_llm_server ...``. It serves
until stopped, or until no request came for ``--idle-seconds`` (0 = never): then it removes its registry
entry (under the registry lock, so no caller is handed a server that is about to leave) and exits. Nothing
outlives its use by more than that: a server started by a script whose data directory is long gone stops by
itself.

Two routes of its own, answered before llama.cpp's (whose routes queue behind the generation lock):
``GET /mark/idle`` (seconds since the last request, requests in flight; does not count as use) and
``GET /mark/touch`` (counts as use: a caller about to send requests keeps the server from stopping).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from filelock import FileLock
from filelock import Timeout as LockTimeout

#: The watchdog looks this often (at most), so a 1 s idle limit is honoured within a fraction of a second.
_MAX_CHECK_S = 5.0


class IdleWatch:
    """ASGI middleware recording when the last request ended and how many are in flight."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.active = 0
        self.last = time.monotonic()

    def idle_s(self) -> float:
        return 0.0 if self.active else time.monotonic() - self.last

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path in ("/mark/idle", "/mark/touch"):
            if path == "/mark/touch":
                self.last = time.monotonic()
            await _send_json(send, {"idle_s": round(self.idle_s(), 3), "active": self.active, "pid": os.getpid()})
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)  # returns when the response (a stream too) has been sent
        finally:
            self.active -= 1
            self.last = time.monotonic()


async def _send_json(send: Any, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def watchdog(server: Any, watch: IdleWatch, idle_limit_s: float, state: Path, lock: Path) -> None:
    """Stop ``server`` once idle for ``idle_limit_s``, after taking this server out of the registry."""
    interval = min(_MAX_CHECK_S, max(0.05, idle_limit_s / 4))
    while not server.should_exit:
        await asyncio.sleep(interval)
        if watch.idle_s() < idle_limit_s:
            continue
        try:
            with FileLock(str(lock), timeout=0):
                if watch.idle_s() < idle_limit_s:  # a caller touched it while we waited for the lock
                    continue
                _forget(state)
                server.should_exit = True
        except LockTimeout:
            continue  # a caller is looking at this server right now: check again later
        print(f"# mark: no request for {idle_limit_s:g} s, stopping", file=sys.stderr, flush=True)


def _forget(state: Path) -> None:
    """Remove the registry entry if it still names this process."""
    try:
        recorded = json.loads(state.read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return
    if recorded == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            state.unlink()


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mark_agents.local_llm_server", description=__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--n-ctx", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--idle-seconds", type=float, default=0.0, help="stop after this long without a request; 0 = never")
    p.add_argument("--state", type=Path, help="registry entry of this server (removed when it stops by itself)")
    p.add_argument("--lock", type=Path, help="registry lock held while the entry is removed")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    # logits_all false and flash_attn true: 3.7 GB -> 0.9 GB RSS and ~+40% prefill on the bundled model.
    # interrupt_requests false: by default a second request (even GET /v1/models) cancels a running stream.
    app = create_app(
        server_settings=ServerSettings(host="127.0.0.1", port=args.port, interrupt_requests=False),
        model_settings=[
            ModelSettings(
                model=args.model,
                n_ctx=args.n_ctx,
                n_threads=args.threads,
                n_threads_batch=args.threads,
                logits_all=False,
                flash_attn=True,
            )
        ],
    )
    watch = IdleWatch(app)
    server = uvicorn.Server(uvicorn.Config(watch, host="127.0.0.1", port=args.port, log_level="info"))

    async def serve() -> None:
        task = None
        if args.idle_seconds > 0 and args.state is not None and args.lock is not None:
            task = asyncio.create_task(watchdog(server, watch, args.idle_seconds, args.state, args.lock))
        try:
            await server.serve()
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    asyncio.run(serve())
    if not server.started:  # could not bind the port, say so to the caller reading the log
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
