"""A scripted fake LLM that answers by role: which prompt a request carries decides the reply.

Used by unit tests of control flow (named `..._with_scripted_fake_llm`); the real model is exercised in
the tests marked `llm`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import httpx

from mark_agents.prompts import COMBINED_SYSTEM, RELATION_SYSTEM
from tests.llm_fixtures import ScriptedLLM, completion, stream


class RoleLLM:
    """Routes each request to `extract`, `relate` or `reply` by its system prompt.

    Each attribute is a callable (request body -> reply text or httpx.Response or an exception instance)
    that tests replace to script behaviour. `down = True` makes every request fail to connect.
    """

    def __init__(self) -> None:
        self.extract: Callable[[dict], Any] = lambda body: json.dumps({"memories": []})
        self.relate: Callable[[dict], Any] = lambda body: json.dumps({"relation": "unrelated", "reason": "test"})
        self.reply: Callable[[dict], Any] = lambda body: "OK."
        self.down = False
        self.log: list[tuple[str, dict]] = []
        self.script = ScriptedLLM(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        body = json.loads(request.content or b"{}")
        system = body["messages"][0]["content"] if body.get("messages") else ""
        role = "extract" if system == COMBINED_SYSTEM else "relate" if system == RELATION_SYSTEM else "reply"
        self.log.append((role, body))
        out = getattr(self, role)(body)
        if isinstance(out, BaseException):
            raise out
        if isinstance(out, httpx.Response):
            return out
        if body.get("stream"):
            return stream([out[: len(out) // 2], out[len(out) // 2 :]], usage=(20, 5))
        return completion(out, prompt_tokens=20, completion_tokens=5)

    def client(self):
        return self.script.client(max_retries=1)

    def calls(self, role: str) -> list[dict]:
        return [b for r, b in self.log if r == role]

    @staticmethod
    def notes(*pairs: tuple[str, str]) -> str:
        return json.dumps({"memories": [{"kind": k, "text": t} for k, t in pairs]})

    @staticmethod
    def user_text(body: dict) -> str:
        return body["messages"][-1]["content"]

    @classmethod
    def said(cls, body: dict, speaker: str = "User") -> list[str]:
        """The messages of one speaker in an extraction prompt (each quoted there as a JSON string)."""
        return [json.loads(q) for q in re.findall(rf"^{speaker}: (\".*\")$", cls.user_text(body), re.MULTILINE)]


FACT = re.compile(r"my (\w+) is called (\w+)", re.IGNORECASE)


class Brain(RoleLLM):
    """A preset for end-to-end flows: extraction turns "my X is called Y" into a note, a reply quotes the first
    remembered note (or says "Noted.")."""

    def __init__(self) -> None:
        super().__init__()
        self.extract = self._facts
        self.reply = self._quote

    def _facts(self, body: dict) -> str:
        users = self.said(body)
        return self.notes(
            *[("user_question", f"The user's {m[1]} is called {m[2]}.") for u in users if (m := FACT.search(u))]
        )

    @staticmethod
    def _quote(body: dict) -> str:
        remembered = re.findall(r"^- (.*)$", body["messages"][0]["content"], re.MULTILINE)
        return f"You told me: {remembered[0]}" if remembered else "Noted."
