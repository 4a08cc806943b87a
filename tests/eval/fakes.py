"""The one scripted LLM (:mod:`mark_agents.llm.scripted`) as the evaluator's tests use it: each reply written
from the request's messages, its token counts from their length (about four characters a token).

``reply`` may give the text, an ``httpx.Response`` (``error(400, ...)`` for a refused request) or an exception
to raise in the transport (``httpx.ConnectError``: the endpoint is down).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx

from mark_agents.llm import LLMClient
from mark_agents.llm.scripted import ScriptedLLM, completion

MODEL = "scripted-fake"
Messages = list[dict[str, str]]


def answering(
    reply: Callable[[Messages], str | httpx.Response | Exception],
    *,
    context_window: int | None = None,
    delay_s: float = 0.0,
) -> tuple[ScriptedLLM, LLMClient]:
    """The scripted endpoint (its ``requests`` hold what was sent) and a real client on it (no retries)."""

    async def step(request: httpx.Request) -> httpx.Response:
        if delay_s:
            await asyncio.sleep(delay_s)
        messages = json.loads(request.content)["messages"]
        out = reply(messages)
        if isinstance(out, Exception):
            raise out
        if isinstance(out, httpx.Response):
            return out
        prompt = sum(len(m["content"]) for m in messages) // 4
        return completion(out, prompt_tokens=prompt, completion_tokens=len(out) // 4, model=MODEL)

    endpoint = ScriptedLLM(step, model=MODEL)
    client = endpoint.client(max_retries=0)
    client.context_window = context_window
    return endpoint, client


def sent(endpoint: ScriptedLLM) -> list[Messages]:
    """The messages of every request the endpoint received, in order."""
    return [body["messages"] for body in endpoint.requests]


def max_tokens(endpoint: ScriptedLLM) -> list[Any]:
    """The output cap of every request, in order (None: no cap)."""
    return [body.get("max_tokens") for body in endpoint.requests]


def prompt_text(messages: Messages) -> str:
    return "\n".join(m["content"] for m in messages)
