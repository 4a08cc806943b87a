"""Scripts for the one scripted LLM (:class:`mark_agents.llm.scripted.RoleScript`): which prompt a request carries
decides the reply.

Used by unit tests of control flow (named `..._with_scripted_fake_llm`); the real model is exercised in
the tests marked `llm`.
"""

from __future__ import annotations

import re

from mark_agents.llm.scripted import RoleScript

#: The scripted LLM answering by role (extract, relate, reply), under the name the tests use.
RoleLLM = RoleScript

FACT = re.compile(r"my (\w+) is called (\w+)", re.IGNORECASE)


class Brain(RoleScript):
    """A preset script for end-to-end flows: extraction turns "my X is called Y" into a note, a reply quotes the
    first remembered note (or says "Noted.")."""

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
