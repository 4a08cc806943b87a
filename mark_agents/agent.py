"""MemoryAgent: the library API for chatbot backends. Async core; the sync methods are written out beside it.

    agent = MemoryAgent(Settings(home="./data"))
    reply = agent.chat("alice", "My dog is called Biscuit.")        # sync
    reply = await agent.achat("alice", "What is my dog's name?")    # async (same instance: pick one style)

A chat turn: store the raw user turn (nothing can be lost after this) -> recall -> respond -> reply returned
(the graph in mark_agents.graph); then, in the background, the MARK builder turns the exchange into memories with
the memory model (``Settings.memory``: its own endpoint or embedded model, or the chat model's). Failed extractions
are retried (`process_pending`), never dropped: the raw turns stay in the store. Every store call is awaited on
`AsyncMemoryStore` (memory_store.aio).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph.state import CompiledStateGraph
from pydantic import BaseModel, Field

from mark_agents.builder import BuildReport, MemoryBuilder
from mark_agents.chat_state import close_from_sync, open_checkpointer, purge_threads, rewrite_chat_state
from mark_agents.config import LLMSettings, Settings
from mark_agents.graph import ChatState, ChatTurn, thread_config
from mark_agents.llm import (
    LLMClient,
    LLMContextExceeded,
    LLMError,
    LLMUnavailable,
    Usage,
    UsageMeter,
    connect,
)
from mark_agents.recall import Recall, RecalledMemory, RecalledTurn, recall_async
from memory_store import (
    AsyncMemoryStore,
    ForgetPlan,
    ForgetReport,
    InvalidInput,
    MarkError,
    MemoryStore,
    PurgeReport,
    Turn,
    forgetter,
)
from memory_store.validation import MAX_TURN_CHARS, check_optional_id, check_scope_id, check_text

log = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_SESSION = "default"


class ChatReply(BaseModel):
    reply: str
    response_id: str
    user_id: str
    session_id: str
    memories: list[RecalledMemory] = Field(default_factory=list)
    #: Earlier turns (episodes or the whole history) that were in the reply's prompt.
    recalled_turns: list[RecalledTurn] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    #: Time spent on memory (recall and prompt assembly), apart from the LLM.
    memory_ms: float = 0.0
    turn_ids: list[str] = Field(default_factory=list)


class RememberResult(BaseModel):
    turn_ids: list[str]
    status: str  # done | scheduled | partial (some turns failed, the rest done) | failed | stored (extract=False)
    reports: list[BuildReport] = Field(default_factory=list)
    error: str | None = None
    usage: Usage = Field(default_factory=Usage)


class _LoopThread:
    """A private event loop in a daemon thread: how the sync methods run the async core."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mark-agent-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


class MemoryAgent:
    """A chatbot with MARK long-term memory, for many users at once from one process."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        llm: LLMClient | None = None,
        store: MemoryStore | None = None,
        memory_llm: LLMClient | None = None,
        owns_llm: bool = False,
        owns_store: bool = False,
    ) -> None:
        """``llm`` answers the user; ``memory_llm`` builds the notes. Unless ``settings.memory_llm`` names a
        memory model of its own, a given ``llm`` builds the notes too.

        Whoever creates a client or store closes it: :meth:`aclose` closes what the agent opened itself, and what
        it was given only when handed over (``owns_llm`` for the given clients, ``owns_store`` for the store).
        """
        self.settings = settings or Settings()
        self.config = self.settings.agent
        self._owns_store = owns_store or store is None
        self.store = store or MemoryStore(self.settings.store)
        #: The same store, awaited: every store call of the agent goes through it.
        self.astore = AsyncMemoryStore(store=self.store)
        self._llm = llm
        self._llm_given = llm is not None
        self._memory_llm = memory_llm
        #: The LLM clients :meth:`aclose` closes (connected by the agent, or handed over with ``owns_llm``).
        self._owned_llms: list[LLMClient] = [c for c in (llm, memory_llm) if c is not None] if owns_llm else []
        self._graph: CompiledStateGraph | None = None
        self._saver: AsyncSqliteSaver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._init_lock: asyncio.Lock | None = None
        self._user_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task] = set()
        self._sync: _LoopThread | None = None
        self._sync_guard = threading.Lock()

    # -- set-up -----------------------------------------------------------------------------------------

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._init_lock = asyncio.Lock()
        elif self._loop is not loop:
            raise MarkError("this MemoryAgent is bound to another event loop: use one agent per loop")

    async def _ready(self) -> CompiledStateGraph:
        """The chat graph, built on first use: the embedding model loaded, the LLM connected, the checkpointer open."""
        self._bind_loop()
        async with self._init_lock:
            if self._graph is None:
                # Load the embedding model now, not inside the first user's turn.
                await self.astore.embed(["warm up"])
            if self._llm is None:
                self._llm = await self._connect(self.settings.llm)
            if self._graph is None:
                turn = ChatTurn(self.astore, self._llm, self.config, after_turn=self._schedule_extraction)
                self._graph = turn.compile(await self._open_checkpointer())
        return self._graph

    async def _checkpointer(self) -> AsyncSqliteSaver:
        """The chat state's checkpointer, opened once on first use (chat, forget and purge share it)."""
        self._bind_loop()
        async with self._init_lock:
            return await self._open_checkpointer()

    async def _open_checkpointer(self) -> AsyncSqliteSaver:
        # The caller holds the set-up lock.
        if self._saver is None:
            self._saver = await open_checkpointer(Path(self.settings.home))
        return self._saver

    async def _connect(self, llm: LLMSettings) -> LLMClient:
        """A client the agent connects itself, hence closes."""
        client = await connect(llm, self.settings.models_dir)
        self._owned_llms.append(client)
        return client

    @property
    def llm(self) -> LLMClient:
        if self._llm is None:
            raise MarkError("the LLM is not connected yet (call an async method first)")
        return self._llm

    async def _memory(self) -> LLMClient:
        """The memory model's client, connected on first use (a chat alone never starts the memory model).

        The chat client is shared when the memory model is the chat model (same settings), or when a chat
        client was given and no memory model is configured; otherwise the agent connects (and owns) one.
        """
        self._bind_loop()
        async with self._init_lock:
            if self._memory_llm is None:
                s = self.settings
                if s.memory_llm is None and (self._llm_given or s.memory == s.llm):
                    if self._llm is None:
                        self._llm = await self._connect(s.llm)
                    self._memory_llm = self._llm
                else:
                    self._memory_llm = await self._connect(s.memory)
        return self._memory_llm

    def _lock_for(self, user_id: str) -> asyncio.Lock:
        return self._user_locks.setdefault(user_id, asyncio.Lock())

    # -- chat ---------------------------------------------------------------------------------------------

    async def achat(
        self,
        user_id: str,
        message: str,
        session_id: str | None = None,
        *,
        on_token: Callable[[str], None] | None = None,
    ) -> ChatReply:
        """Answer a message with the user's memories; extraction of new memories runs in the background.

        The turn is the graph in mark_agents.graph: recall -> respond -> remember, its data in `ChatState`.
        """
        check_scope_id(user_id)
        session_id = check_optional_id(session_id, "session id") or DEFAULT_SESSION
        message = check_text(message, "message", limit=MAX_TURN_CHARS)
        self._bind_loop()
        # Stored before any LLM call: if the model is down, the message is not lost.
        (turn,) = await self.astore.add_turns(
            [{"user_id": user_id, "session_id": session_id, "role": "user", "content": message}]
        )
        inputs: ChatState = {
            "user_id": user_id,
            "session_id": session_id,
            "message": message,
            "user_turn_id": turn.id,
            "response_id": uuid.uuid4().hex,
            "stream": on_token is not None,
        }
        try:
            graph = await self._ready()
            state = await _run_turn(graph, inputs, thread_config(user_id, session_id), on_token)
        except LLMUnavailable as exc:
            raise LLMUnavailable(
                f"{exc} - your message was saved; its memories will be extracted when the model is back"
            ) from exc
        except LLMContextExceeded as exc:
            raise LLMContextExceeded(
                f"your message is too long for the model to answer ({exc}) - it was saved; send a shorter one"
            ) from exc
        return ChatReply(
            reply=state["reply"],
            response_id=state["response_id"],
            user_id=user_id,
            session_id=session_id,
            memories=[RecalledMemory.model_validate(m) for m in state.get("recalled", [])],
            recalled_turns=[RecalledTurn.model_validate(t) for t in state.get("recalled_turns", [])],
            usage=Usage.model_validate(state.get("usage", {})),
            memory_ms=state.get("memory_ms", 0.0),
            turn_ids=[turn.id, state.get("assistant_turn_id", "")],
        )

    def _schedule_extraction(self, user_id: str) -> None:
        """After a stored exchange: build the user's notes in the background (the reply does not wait)."""
        self._spawn(self._process_user(user_id))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- remembering -------------------------------------------------------------------------------------

    async def aremember(
        self,
        messages: list[dict[str, str]],
        user_id: str,
        session_id: str | None = None,
        *,
        wait: bool = True,
        chunk_messages: int = 2,
        extract: bool = True,
    ) -> RememberResult:
        """Store messages from a backend's own LLM loop and build memories from them.

        `chunk_messages` is how many messages each extraction call sees (2 = one exchange, MARK's per-turn
        unit; larger chunks cost fewer calls on long transcripts). With wait=False it returns at once.
        With extract=False the messages are only stored (recallable as episodes at once, no LLM call); their
        notes are built by a later `process_pending`. Each message may carry `created_at` (a datetime), a
        `speaker` name and a `date` as the conversation states it, kept with the turn.
        """
        check_scope_id(user_id)
        session_id = check_optional_id(session_id, "session id") or DEFAULT_SESSION
        if not isinstance(messages, list) or not messages:
            raise InvalidInput("messages must be a non-empty list of {'role', 'content'} objects")
        rows = []
        for n, m in enumerate(messages):
            if not isinstance(m, dict) or "content" not in m:
                raise InvalidInput(f"message {n} must be an object with 'role' and 'content'")
            row = {"user_id": user_id, "session_id": session_id, "role": m.get("role", "user"), "content": m["content"]}
            if m.get("created_at") is not None:
                row["created_at"] = m["created_at"]
            extra = {k: str(m[k]) for k in ("speaker", "date") if m.get(k)}
            if extra:
                row["metadata"] = extra
            rows.append(row)
        turns = await self.astore.add_turns(rows)
        ids = [t.id for t in turns]
        if not extract:
            return RememberResult(turn_ids=ids, status="stored")
        if not wait:
            self._bind_loop()
            self._spawn(self._process_user(user_id, chunk_messages=chunk_messages, complete=True))
            return RememberResult(turn_ids=ids, status="scheduled")
        self._bind_loop()
        reports, error, usage = await self._process_user(user_id, chunk_messages=chunk_messages, complete=True)
        return RememberResult(turn_ids=ids, status=_status(reports, error), reports=reports, error=error, usage=usage)

    async def _process_user(
        self, user_id: str, *, chunk_messages: int = 2, raise_errors: bool = False, complete: bool = False
    ) -> tuple[list[BuildReport], str | None, Usage]:
        """Build memories from the user's pending (or retryable failed) turns, one exchange at a time.

        The retry rule lives here (and in the store's `retryable_turns`): a turn is retried while pending or failed
        fewer than `max_attempts` times; with nothing to retry, the memory model is not even connected. A turn
        that cannot be extracted fails alone: when a group of turns fails, its exchanges (then its turns) are
        retried one by one, so good turns are never held back by a poisoned one. Only an endpoint that is down
        stops the pass (every later call would fail too); the turns wait for the next one.
        """
        reports: list[BuildReport] = []
        failures: list[str] = []
        meter = UsageMeter()
        async with self._lock_for(user_id):
            pending = await self.astore.retryable_turns(user_id, self.config.max_attempts)
            queue = collections.deque(self._exchanges(pending, chunk_messages, hold_open=not complete))
            if not queue:
                return reports, None, meter.total
            try:
                memory_llm = await self._memory()
            except LLMError as exc:
                log.warning("memory extraction postponed for a user: %s", exc)
                return reports, str(exc), meter.total
            builder = MemoryBuilder(self.astore, memory_llm, self.config)
            while queue:
                chunk = queue.popleft()
                ids = [t.id for t in chunk]
                try:
                    reports.append(await builder.build(chunk, meter=meter))
                except LLMError as exc:
                    if len(chunk) > 1 and not isinstance(exc, LLMUnavailable):
                        log.warning("extraction of %d turns failed; retrying them apart: %s", len(chunk), exc)
                        queue.extendleft(reversed(self._apart(chunk)))
                        continue
                    await self.astore.set_turns_status(ids, "failed", error=str(exc))
                    log.warning("memory extraction failed (will retry): %s", exc)
                    if raise_errors:
                        raise
                    failures.append(str(exc))
                    if isinstance(exc, LLMUnavailable):
                        break
                    continue
                await self.astore.set_turns_status(ids, "done")
        return reports, _failure_summary(failures), meter.total

    @staticmethod
    def _apart(chunk: list[Turn]) -> list[list[Turn]]:
        """A failed group split finer: one exchange per user turn, or single turns if it held one exchange."""
        exchanges: list[list[Turn]] = []
        for t in chunk:
            if t.role == "user" or not exchanges:
                exchanges.append([t])
            else:
                exchanges[-1].append(t)
        return exchanges if len(exchanges) > 1 else [[t] for t in chunk]

    @staticmethod
    def _exchanges(turns: list[Turn], size: int, hold_open: bool = True) -> list[list[Turn]]:
        """Group turns per session into chunks that end on an assistant message.

        With hold_open, a session's trailing user turns (whose reply may not exist yet) wait for the next
        pass, so an exchange is never split in two extractions; flushes, re-derivations and remember() pass all.
        """
        chunks: list[list[Turn]] = []
        by_session: dict[str | None, list[Turn]] = {}
        for t in turns:
            by_session.setdefault(t.session_id, []).append(t)
        for group in by_session.values():
            current: list[Turn] = []
            for t in group:
                current.append(t)
                if len(current) >= size and t.role == "assistant":
                    chunks.append(current)
                    current = []
            if current and not (hold_open and current[-1].role == "user"):
                chunks.append(current)
        return chunks

    async def aprocess_pending(self, user_id: str | None = None) -> int:
        """Retry extraction of every pending or failed turn (of one user, or all). Returns users processed.

        Cheap when nothing waits (no LLM is connected): the REPL calls it at every start."""
        users = [user_id] if user_id else await self.astore.users_with_pending_turns(self.config.max_attempts)
        for u in users:
            await self._process_user(u, complete=True)
        return len(users)

    async def arederive(self, user_id: str, *, fresh: bool = False) -> RememberResult:
        """Re-derive a user's memories from their raw turns with the memory model (after a prompt or model change).

        Not the store's `rebuild` (its indexes again from its rows): this one calls the LLM. `fresh` deletes the
        current memories first (their history is kept).
        """
        check_scope_id(user_id)
        try:
            # Probe the memory model before touching anything: re-deriving must not delete memories it cannot
            # derive again.
            memory_llm = await self._memory()
            await memory_llm.chat([{"role": "user", "content": "Reply with OK."}], max_tokens=2)
        except LLMError as exc:
            turns = await self.astore.turns(user_id, limit=100_000)
            return RememberResult(turn_ids=[t.id for t in turns], status="failed", error=str(exc))
        if fresh:
            for m in (await self.astore.list(user_id, include_history=True, limit=100_000)).items:
                await self.astore.delete(m.id, user_id, reason="re-derived from raw turns", actor="mark-builder")
        ids = [t.id for t in await self.astore.turns(user_id, limit=100_000)]
        await self.astore.set_turns_status(ids, "pending", count_attempt=False)
        reports, error, usage = await self._process_user(user_id, complete=True)
        return RememberResult(turn_ids=ids, status=_status(reports, error), reports=reports, error=error, usage=usage)

    async def aflush(self) -> None:
        """Wait until every background extraction has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- recall and feedback -------------------------------------------------------------------------------

    async def arecall(
        self, query: str, user_id: str, budget_tokens: int | None = None, *, session_id: str | None = None
    ) -> Recall:
        """A ready context block of the user's memories for a query, within a token budget.

        With `session_id`, the session's most recent messages (which a chat prompt shows as history) are left out.
        """
        check_scope_id(user_id)
        check_optional_id(session_id, "session id")
        return await recall_async(
            self.astore, query, user_id, self.config, session_id=session_id, budget_tokens=budget_tokens
        )

    async def afeedback(self, user_id: str, response_id: str, good: bool, comment: str = "") -> list[str]:
        """Good or bad on a reply: the trust of the memories used in it goes up or down. Returns their ids."""
        check_scope_id(user_id)
        for t in await self.astore.turns(user_id, limit=500, newest_first=True):
            if t.metadata.get("response_id") == response_id:
                ids = list(t.metadata.get("memory_ids", []))
                await self.astore.add_feedback(user_id, response_id, ids, 1 if good else -1, comment=comment)
                return ids
        raise InvalidInput(f"no reply {response_id!r} for this user")

    # -- privacy and lifecycle -----------------------------------------------------------------------------

    async def aforget(
        self,
        user_id: str,
        memory_id: str | None = None,
        about: str | None = None,
        *,
        plan: ForgetPlan | None = None,
        reason: str = "forgotten on request",
        actor: str = "api",
    ) -> ForgetReport:
        """Forget one memory (`memory_id`, an id or unique prefix) or everything about a topic (`about`) so that it
        never comes back: the store's notes, turns, history and indexes (`MemoryStore.forget`), and the user's
        checkpointed chat threads. `plan`: a `MemoryStore.plan_forget` result the user confirmed.

        Waits for the user's background extraction first, so no note is derived from the text while it goes.
        """
        check_scope_id(user_id)
        self._bind_loop()
        async with self._lock_for(user_id):
            report = await self.astore.forget(user_id, memory_id, about=about, plan=plan, reason=reason, actor=actor)
            redact = forgetter.redactor(self.store, report)
            report.chat_threads = await rewrite_chat_state(await self._checkpointer(), user_id, redact)
        return report

    async def apurge_user(self, user_id: str) -> PurgeReport:
        """Remove every trace of a user: memories, turns, history, feedback, vectors and chat threads.

        The one purge of mark (`mark memory purge` runs it too). Waits for the user's background extraction first,
        so nothing is written about the user after the purge.
        """
        check_scope_id(user_id)
        self._bind_loop()
        async with self._lock_for(user_id):
            await purge_threads(await self._checkpointer(), user_id)
            return await self.astore.purge_user(user_id)

    async def aclose(self) -> None:
        """Wait for background extraction, then close what the agent owns (see the constructor)."""
        await self.aflush()
        self._graph = None
        if self._saver is not None:
            await self._saver.conn.close()
            self._saver = None
        owned, self._owned_llms = list(dict.fromkeys(self._owned_llms)), []
        for client in owned:
            await client.aclose()
        # A closed client is not used again: were the agent used after this, it would connect anew.
        if self._llm in owned:
            self._llm = None
        if self._memory_llm in owned:
            self._memory_llm = None
        self._close_store()

    def _close_store(self) -> None:
        if self._owns_store:
            self._owns_store = False  # once
            self.store.close()

    # -- sync API: each method runs its async twin on the agent's private loop -----------------------------

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._sync_guard:
            if self._sync is None:
                self._sync = _LoopThread()
        return self._sync.run(coro)

    def chat(
        self,
        user_id: str,
        message: str,
        session_id: str | None = None,
        *,
        on_token: Callable[[str], None] | None = None,
    ) -> ChatReply:
        """Sync :meth:`achat`."""
        return self._run(self.achat(user_id, message, session_id, on_token=on_token))

    def remember(
        self,
        messages: list[dict[str, str]],
        user_id: str,
        session_id: str | None = None,
        *,
        wait: bool = True,
        chunk_messages: int = 2,
        extract: bool = True,
    ) -> RememberResult:
        """Sync :meth:`aremember`."""
        return self._run(
            self.aremember(messages, user_id, session_id, wait=wait, chunk_messages=chunk_messages, extract=extract)
        )

    def recall(
        self, query: str, user_id: str, budget_tokens: int | None = None, *, session_id: str | None = None
    ) -> Recall:
        """Sync :meth:`arecall`."""
        return self._run(self.arecall(query, user_id, budget_tokens, session_id=session_id))

    def feedback(self, user_id: str, response_id: str, good: bool, comment: str = "") -> list[str]:
        """Sync :meth:`afeedback`."""
        return self._run(self.afeedback(user_id, response_id, good, comment))

    def process_pending(self, user_id: str | None = None) -> int:
        """Sync :meth:`aprocess_pending`."""
        return self._run(self.aprocess_pending(user_id))

    def rederive(self, user_id: str, *, fresh: bool = False) -> RememberResult:
        """Sync :meth:`arederive`."""
        return self._run(self.arederive(user_id, fresh=fresh))

    def flush(self) -> None:
        """Sync :meth:`aflush`."""
        return self._run(self.aflush())

    def forget(
        self,
        user_id: str,
        memory_id: str | None = None,
        about: str | None = None,
        *,
        plan: ForgetPlan | None = None,
        reason: str = "forgotten on request",
        actor: str = "api",
    ) -> ForgetReport:
        """Sync :meth:`aforget`."""
        return self._run(self.aforget(user_id, memory_id, about, plan=plan, reason=reason, actor=actor))

    def purge_user(self, user_id: str) -> PurgeReport:
        """Sync :meth:`apurge_user`."""
        return self._run(self.apurge_user(user_id))

    def close(self) -> None:
        """Close the sync API's resources (async users: `await agent.aclose()` in their loop first, which also waits
        for background extraction; the chat state's connection is closed here all the same)."""
        if self._sync is not None:
            self._sync.run(self.aclose())
            self._sync.stop()
            self._sync = None
        if self._saver is not None:  # opened by async use that did not end with aclose
            saver, self._saver, self._graph = self._saver, None, None
            close_from_sync(saver)
        self._close_store()

    def __enter__(self) -> MemoryAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The sync methods, each the twin of ``"a" + name`` (tests/mark_agents/test_agent_api.py holds them to it).
SYNC_TWINS = (
    "chat",
    "remember",
    "recall",
    "feedback",
    "process_pending",
    "rederive",
    "flush",
    "forget",
    "purge_user",
)


async def _run_turn(
    graph: CompiledStateGraph,
    inputs: ChatState,
    config: RunnableConfig,
    on_token: Callable[[str], None] | None,
) -> ChatState:
    """Run the chat graph for one turn; a streamed reply's tokens go to `on_token` as they come."""
    if on_token is None:
        return await graph.ainvoke(inputs, config)
    state: ChatState = {}
    async for mode, chunk in graph.astream(inputs, config, stream_mode=["custom", "values"]):
        if mode == "custom":
            on_token(chunk)
        else:
            state = chunk
    return state


def _status(reports: list[BuildReport], error: str | None) -> str:
    if error is None:
        return "done"
    return "partial" if reports else "failed"


def _failure_summary(failures: list[str]) -> str | None:
    """One line for the caller: the first error, and how many groups of turns failed when several did."""
    if not failures:
        return None
    if len(failures) == 1:
        return failures[0]
    return f"{len(failures)} groups of turns could not be extracted (kept, retried later); first: {failures[0]}"
