"""The chat graph (langgraph): recall -> respond -> remember.

State is checkpointed in SQLite (one thread per user and session), so a session resumes where it stopped,
in the same process or a new one. `remember` only schedules the MARK builder in the background: the reply
never waits for memory extraction.
"""

from __future__ import annotations

import operator
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph

from mark_agents.llm import estimate_tokens
from mark_agents.prompts import ANSWER_SYSTEM


class ChatState(TypedDict, total=False):
    user_id: str
    session_id: str
    #: The conversation so far, as {"role", "content"} dicts (appended to by each turn).
    messages: Annotated[list[dict[str, str]], operator.add]
    memory_block: str
    recalled: list[dict[str, Any]]
    recalled_turns: list[dict[str, Any]]
    reply: str


def build_messages(memory_block: str, history: list[dict[str, str]], message: str, history_budget: int) -> list[dict]:
    """System prompt with the memories, as much recent history as fits, then the new message."""
    system = ANSWER_SYSTEM + ("\n\n" + memory_block if memory_block else "")
    kept: list[dict[str, str]] = []
    used = 0
    for m in reversed(history):
        cost = estimate_tokens(m["content"]) + 4
        if used + cost > history_budget:
            break
        kept.insert(0, {"role": m["role"], "content": m["content"]})
        used += cost
    return [{"role": "system", "content": system}, *kept, {"role": "user", "content": message}]


def make_graph(
    recall_node: Callable[[ChatState], Awaitable[dict]],
    respond_node: Callable[[ChatState, dict], Awaitable[dict]],
    remember_node: Callable[[ChatState, dict], Awaitable[dict]],
    checkpointer: Any,
):
    graph = StateGraph(ChatState)
    graph.add_node("recall", recall_node)
    graph.add_node("respond", respond_node)
    graph.add_node("remember", remember_node)
    graph.add_edge(START, "recall")
    graph.add_edge("recall", "respond")
    graph.add_edge("respond", "remember")
    graph.add_edge("remember", END)
    return graph.compile(checkpointer=checkpointer)
