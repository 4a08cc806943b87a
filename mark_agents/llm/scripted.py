"""The one scripted LLM: an OpenAI-compatible endpoint played in process, for runs that must not depend on a model.

``mark bench chat`` and ``mark bench forget`` use it for their default runs (LLM time out of the measurement, the
same replies every time), and the tests use it for control flow. Only the HTTP transport is replaced
(``httpx.MockTransport`` under the real ``openai`` client, given to :class:`~mark_agents.llm.LLMClient` through
its ``client=`` argument): retries, streaming, usage accounting and structured output run as with a real endpoint.

- :class:`ScriptedLLM` answers each request with the next step of a script (a response, an exception to raise,
  or a function of the request); :func:`completion`, :func:`stream` and :func:`error` build responses.
- :class:`RoleScript` answers by role instead: which system prompt a request carries (MARK's extraction, its
  relation check, or anything else: a reply) picks the function that writes the reply.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import openai

from mark_agents.config import LLMSettings
from mark_agents.llm.client import LLMClient
from mark_agents.prompts import COMBINED_SYSTEM, RELATION_SYSTEM

#: A step of a script: a response, an exception to raise, or a function of the request giving a response.
Step = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]
#: What a role's function gives: the reply's text, a whole response, or an exception to raise.
Reply = str | httpx.Response | BaseException

BASE_URL = "http://scripted-llm.invalid/v1"
MODEL = "fake-model"


def completion(
    text: str,
    *,
    prompt_tokens: int | None = 10,
    completion_tokens: int | None = 5,
    finish_reason: str = "stop",
    model: str = MODEL,
) -> httpx.Response:
    """A chat completion answer; pass ``prompt_tokens=None`` to leave out the usage block."""
    body: dict[str, Any] = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
    }
    if prompt_tokens is not None and completion_tokens is not None:
        body["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
    return httpx.Response(200, json=body)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """An error answer shaped like OpenAI's (``{"error": {"message": ...}}``)."""
    return httpx.Response(status, json={"error": {"message": message, "type": "scripted"}}, headers=headers)


def stream(deltas: list[str], *, usage: tuple[int, int] | None = None, model: str = MODEL) -> httpx.Response:
    """A server-sent-events stream of ``deltas``, with a final usage chunk when ``usage`` is given."""
    base = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": 0, "model": model}
    events = []
    for i, delta in enumerate(deltas):
        finish = "stop" if i == len(deltas) - 1 else None
        chunk = {**base, "choices": [{"index": 0, "delta": {"content": delta}, "finish_reason": finish}]}
        events.append(f"data: {json.dumps(chunk)}\n\n")
    if usage is not None:
        totals = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
        events.append(f"data: {json.dumps({**base, 'choices': [], 'usage': totals})}\n\n")
    events.append("data: [DONE]\n\n")
    return httpx.Response(200, content="".join(events).encode(), headers={"content-type": "text/event-stream"})


class ScriptedLLM:
    """An endpoint that answers each request with the next step of a script; the last step repeats.

    ``requests`` holds the JSON bodies received, in order.
    """

    def __init__(self, *steps: Step, base_url: str = BASE_URL, model: str = MODEL) -> None:
        if not steps:
            raise ValueError("a script needs at least one step")
        self.steps = list(steps)
        self.base_url = base_url
        self.model = model
        self.requests: list[dict[str, Any]] = []

    @property
    def calls(self) -> int:
        return len(self.requests)

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(json.loads(request.content or b"{}"))
        step = self.steps[min(len(self.requests), len(self.steps)) - 1]
        if isinstance(step, Exception):
            raise step
        if isinstance(step, httpx.Response):
            return httpx.Response(step.status_code, headers=step.headers, content=step.content)
        response = step(request)
        return await response if isinstance(response, Awaitable) else response

    def openai_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key="x",
            http_client=httpx.AsyncClient(transport=httpx.MockTransport(self.handler)),
        )

    def client(self, settings: LLMSettings | None = None, **overrides: Any) -> LLMClient:
        """An LLMClient on this script; back-off is shortened so retries take milliseconds."""
        settings = settings or LLMSettings(base_url=self.base_url, model=self.model, **overrides)
        client = LLMClient(settings, client=self.openai_client())
        client.retry_base_s = client.connect_retry_base_s = 0.001
        return client


def _default_extract(body: dict) -> Reply:
    return json.dumps({"memories": []})


def _default_relate(body: dict) -> Reply:
    return json.dumps({"relation": "unrelated", "reason": "scripted"})


def _default_reply(body: dict) -> Reply:
    return "OK."


class RoleScript:
    """An endpoint that answers by role: ``extract`` (MARK's extraction prompt), ``relate`` (its relation check)
    or ``reply`` (anything else), each a function of the request body giving a :data:`Reply`.

    Replace the functions to script behaviour; ``down = True`` makes every request fail to connect. Every
    request is logged with its role (:meth:`calls`).
    """

    def __init__(
        self,
        *,
        extract: Callable[[dict], Reply] = _default_extract,
        relate: Callable[[dict], Reply] = _default_relate,
        reply: Callable[[dict], Reply] = _default_reply,
        usage: tuple[int, int] = (20, 5),
    ) -> None:
        self.extract = extract
        self.relate = relate
        self.reply = reply
        self.usage = usage
        self.down = False
        self.log: list[tuple[str, dict]] = []
        self.script = ScriptedLLM(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        body = json.loads(request.content or b"{}")
        messages = body.get("messages") or [{}]
        system = messages[0].get("content", "") if messages[0].get("role") == "system" else ""
        role = "reply"
        if system.startswith(COMBINED_SYSTEM):
            role = "extract"
        elif system.startswith(RELATION_SYSTEM):
            role = "relate"
        self.log.append((role, body))
        out = getattr(self, role)(body)
        if isinstance(out, BaseException):
            raise out
        if isinstance(out, httpx.Response):
            return out
        if body.get("stream"):
            return stream([out[: len(out) // 2], out[len(out) // 2 :]], usage=self.usage)
        return completion(out, prompt_tokens=self.usage[0], completion_tokens=self.usage[1])

    def client(self, **overrides: Any) -> LLMClient:
        return self.script.client(**{"max_retries": 1, **overrides})

    def calls(self, role: str) -> list[dict]:
        """The request bodies of one role, in order."""
        return [b for r, b in self.log if r == role]

    @staticmethod
    def notes(*pairs: tuple[str, str]) -> str:
        """An extraction reply: ``(kind, text)`` notes."""
        return json.dumps({"memories": [{"kind": k, "text": t} for k, t in pairs]})

    @staticmethod
    def user_text(body: dict) -> str:
        return body["messages"][-1]["content"]

    @classmethod
    def said(cls, body: dict, speaker: str = "User") -> list[str]:
        """The messages of one speaker in an extraction prompt (each quoted there as a JSON string)."""
        return [json.loads(q) for q in re.findall(rf"^{speaker}: (\".*\")$", cls.user_text(body), re.MULTILINE)]
