"""The chat graph (langgraph): recall -> respond -> remember, over a `ChatTurn` that holds what the nodes need.

One chat turn, as data: `MemoryAgent.achat` stores the user's message, then runs the graph with a `ChatState`
carrying the user id, session id, message, the stored turn's id and the response id. `recall` reads the user's
memory (mark_agents.recall -> the store, scoped by that user id), `respond` asks the LLM (streaming tokens through
LangGraph's custom stream when asked), `remember` stores the reply and schedules the MARK builder. Every node
returns what it found as state; the only thing in the run's config is LangGraph's own ``thread_id``.

State is checkpointed in SQLite (one thread per user and session), so a session resumes where it stopped, in the
same process or a new one. `remember` only schedules extraction in the background: the reply never waits for it.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from mark_agents.config import AgentConfig
from mark_agents.llm import LLMClient, UsageMeter, estimate_tokens
from mark_agents.prompts import ANSWER_SYSTEM
from mark_agents.recall import recall_async
from memory_store import AsyncMemoryStore
from memory_store.validation import user_key

#: Tokens of the session's recent messages a reply's prompt may show as chat history.
HISTORY_BUDGET_TOKENS = 1500


class ChatState(TypedDict, total=False):
    """A chat thread's state. The turn's inputs are set by `achat`; each node adds what it found."""

    # -- the turn's inputs
    user_id: str
    session_id: str
    message: str
    #: The stored user turn (left out of recall: the prompt shows the message already).
    user_turn_id: str
    response_id: str
    #: Stream the reply's tokens (LangGraph's "custom" stream) instead of one completion.
    stream: bool
    # -- kept across turns
    #: The conversation so far, as {"role", "content"} dicts (appended to by each turn).
    messages: Annotated[list[dict[str, str]], operator.add]
    # -- found by the nodes
    memory_block: str
    recalled: list[dict[str, Any]]
    recalled_turns: list[dict[str, Any]]
    reply: str
    #: The LLM usage of the reply (a `Usage` as a dict: checkpoints hold plain data).
    usage: dict[str, Any]
    #: Time spent on memory (recall and prompt assembly), apart from the LLM.
    memory_ms: float
    assistant_turn_id: str


def thread_config(user_id: str, session_id: str) -> RunnableConfig:
    """The run's config: LangGraph's checkpoint thread, one per user and session (nothing else travels in it)."""
    return {"configurable": {"thread_id": f"{user_key(user_id)}:{user_key(session_id)}"}}


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


class ChatTurn:
    """The three nodes of a chat turn, over the store, the chat LLM and the agent's configuration.

    `after_turn(user_id)` is called once the exchange is stored: the agent schedules the user's extraction there.
    """

    def __init__(
        self,
        store: AsyncMemoryStore,
        llm: LLMClient,
        config: AgentConfig,
        after_turn: Callable[[str], None],
    ) -> None:
        self.store = store
        self.llm = llm
        self.config = config
        self.after_turn = after_turn

    def compile(self, checkpointer: BaseCheckpointSaver) -> CompiledStateGraph:
        graph = StateGraph(ChatState)
        graph.add_node("recall", self.recall)
        graph.add_node("respond", self.respond)
        graph.add_node("remember", self.remember)
        graph.add_edge(START, "recall")
        graph.add_edge("recall", "respond")
        graph.add_edge("respond", "remember")
        graph.add_edge("remember", END)
        return graph.compile(checkpointer=checkpointer)

    async def recall(self, state: ChatState) -> ChatState:
        """The user's memory for the message; the message and the session's recent messages are in the prompt
        already (chat history), so recall leaves them out."""
        t = time.perf_counter()
        found = await recall_async(
            self.store,
            state["message"],
            state["user_id"],
            self.config,
            session_id=state["session_id"],
            exclude_turn_ids=[state["user_turn_id"]],
        )
        return {
            "memory_block": found.text,
            "recalled": [m.model_dump() for m in found.memories],
            "recalled_turns": [x.model_dump() for x in found.turns],
            "memory_ms": (time.perf_counter() - t) * 1000,
        }

    async def respond(self, state: ChatState) -> ChatState:
        """The reply: one completion, or a stream whose tokens go out on LangGraph's custom stream."""
        t = time.perf_counter()
        history = state.get("messages", [])[-self.config.history_messages :]
        message = state["message"]
        messages = build_messages(state.get("memory_block", ""), history, message, HISTORY_BUDGET_TOKENS)
        memory_ms = state.get("memory_ms", 0.0) + (time.perf_counter() - t) * 1000
        meter = UsageMeter()
        if state.get("stream"):
            write = get_stream_writer()
            parts = []
            async for delta in self.llm.stream(messages, max_tokens=self.config.max_tokens_reply, meter=meter):
                parts.append(delta)
                write(delta)
            reply = "".join(parts).strip()
        else:
            reply = (await self.llm.chat(messages, max_tokens=self.config.max_tokens_reply, meter=meter)).text
        return {
            "reply": reply,
            "usage": meter.total.model_dump(),
            "memory_ms": memory_ms,
            "messages": [{"role": "user", "content": message}, {"role": "assistant", "content": reply}],
        }

    async def remember(self, state: ChatState) -> ChatState:
        """Store the reply (with the memories it used), count their recall, and schedule extraction."""
        user_id = state["user_id"]
        used = [m["id"] for m in state.get("recalled", [])]
        (assistant,) = await self.store.add_turns(
            [
                {
                    "user_id": user_id,
                    "session_id": state["session_id"],
                    "role": "assistant",
                    "content": state["reply"] or "(empty reply)",
                    "metadata": {"response_id": state["response_id"], "memory_ids": used},
                }
            ]
        )
        if used:
            await self.store.mark_recalled(used, user_id)
        self.after_turn(user_id)
        return {"assistant_turn_id": assistant.id}
