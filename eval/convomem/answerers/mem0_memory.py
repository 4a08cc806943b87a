"""``mem0``: the paper's "RAG" baseline, Mem0 (the ``mem0ai`` library, optional extra ``mem0``).

What the reference's ``Mem0MemoryAnswerer`` does: every conversation of a haystack is added to a Mem0 memory
(one user per haystack, the conversation as its ``run_id``; Mem0's LLM extracts the memories), the question is
searched in that user's memories, and the answer is written from the memories found, with the same answer
prompt as every other method.

Offline and on the run's own models: Mem0's LLM is its OpenAI provider pointed at the answering endpoint (the
local server's URL when the model is local), its embedder is replaced by the run's embedding model (no
download, no API), its vector store is Qdrant in memory, its history database and its home directory live
under the run's output directory; telemetry is off and spaCy lemmatisation is disabled (it would download a
model). Indexing tokens are metered from the endpoint's replies and reported apart (``index_tokens``).

Evidence recall: Mem0 returns extracted memories, not messages; an evidence message counts as reached when a
memory found for the question came from its conversation (the reference counts retrieved conversations the
same way).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from pathlib import Path
from typing import Any

from mark_agents.llm import Usage
from mark_eval.convomem.answerers.base import Answerer, AnswererContext, OncePerHaystack, Selection, selection
from mark_eval.convomem.prompts import ContextKind, answer_messages
from mark_eval.convomem.schema import Haystack
from memory_store import mem0_peer
from memory_store.errors import MarkError

MEM0_MISSING = "method 'mem0' needs the optional extra mem0: pip install 'mark-memory[mem0]' (the mem0ai library)"
#: Memories searched per question: the reference's Mem0 server returned up to 100 (mem0's default then).
SEARCH_TOP_K = 100


class _Built:
    """What adding a haystack's conversations to Mem0 cost, and how many adds failed."""

    def __init__(self) -> None:
        self.usage = Usage()
        self.failures = 0
        self.last_error = ""


_building: contextvars.ContextVar[_Built | None] = contextvars.ContextVar("mem0_building", default=None)


def require_mem0() -> None:
    """Fail before any output when the extra is not installed (one line, no traceback)."""
    import importlib.util

    if importlib.util.find_spec("mem0") is None:
        raise MarkError(MEM0_MISSING)


def import_mem0(home: Path | None) -> Any:
    """``mem0.AsyncMemory`` with telemetry off and its files under ``home`` (memory_store.mem0_peer, shared with
    ``mark bench store --compare mem0``); one clear line when absent."""
    try:
        mem0 = mem0_peer.import_mem0(home)
    except ImportError:
        raise MarkError(MEM0_MISSING) from None
    return mem0.AsyncMemory


class _LocalEmbedder:
    """Mem0's embedder interface over the run's embedding model."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder

    def embed(self, text: str, memory_action: str | None = None) -> list[float]:
        return [float(x) for x in self.embedder.embed([text])[0]]

    def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]:
        return [[float(x) for x in row] for row in self.embedder.embed(list(texts))]


def _metered(create: Any) -> Any:
    """Wrap the OpenAI client's ``chat.completions.create`` so each reply's usage is charged to the haystack
    being built (a context variable: ``asyncio.to_thread`` carries it into Mem0's worker threads)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        response = create(*args, **kwargs)
        built = _building.get()
        usage = getattr(response, "usage", None)
        if built is not None and usage is not None:
            built.usage = built.usage + Usage(
                prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                calls=1,
                latency_ms=(time.perf_counter() - started) * 1000.0,
            )
        return response

    return call


class Mem0Memory(Answerer):
    name = "mem0"
    needs_llm_to_select = True

    def __init__(self, ctx: AnswererContext, mem0_llm: Any | None = None) -> None:
        """``mem0_llm``: an object with Mem0's LLM interface (``generate_response``) used instead of the
        endpoint (unit tests with a scripted LLM)."""
        super().__init__(ctx)
        self._mem0_llm = mem0_llm
        self._memory: Any | None = None
        self._lock = asyncio.Lock()
        #: one Mem0 operation at a time: its in-process Qdrant is not made for concurrent threads
        self._op_lock = asyncio.Lock()
        self._built = OncePerHaystack(self._build)

    def _home(self) -> Path | None:
        return Path(self.ctx.work_dir) / "mem0-home" if self.ctx.work_dir is not None else None

    def _llm_config(self) -> dict[str, Any]:
        llm = self.ctx.llm
        if self._mem0_llm is None and llm is None:
            raise MarkError("method 'mem0' needs an LLM: Mem0 extracts its memories with one")
        base_url = getattr(llm, "base_url", None)
        settings = getattr(llm, "settings", None)
        return {
            "model": getattr(llm, "model", None) or "local",
            "openai_base_url": base_url or "http://127.0.0.1:9/v1",
            "api_key": getattr(settings, "api_key", None) or "sk-no-key",
            "temperature": 0.0,
        }

    async def _get_memory(self) -> Any:
        async with self._lock:
            if self._memory is not None:
                return self._memory
            home = self._home()
            async_memory = import_mem0(home)
            from mem0.configs.base import MemoryConfig

            embedder = self.ctx.embedder
            if embedder is None:
                raise MarkError("method 'mem0' needs the run's embedding model")
            dims = len(embedder.embed(["dimension probe"])[0])
            history = str(home / "history.db") if home is not None else ":memory:"
            config = MemoryConfig(
                llm={"provider": "openai", "config": self._llm_config()},
                # constructed with a placeholder key, then replaced by the local embedder below
                embedder={"provider": "openai", "config": {"api_key": "sk-unused", "embedding_dims": dims}},
                vector_store={
                    "provider": "qdrant",
                    "config": {"collection_name": "convomem", "embedding_model_dims": dims, "path": ":memory:"},
                },
                history_db_path=history,
            )
            memory = await asyncio.to_thread(async_memory, config)
            memory.embedding_model = _LocalEmbedder(embedder)
            if self._mem0_llm is not None:
                memory.llm = self._mem0_llm
            else:
                client = getattr(memory.llm, "client", None)
                if client is not None:
                    client.chat.completions.create = _metered(client.chat.completions.create)
            self._memory = memory
            return memory

    @staticmethod
    def user_id(haystack: Haystack) -> str:
        return f"convomem-{haystack.hid}"

    async def _build(self, haystack: Haystack) -> _Built:
        memory = await self._get_memory()
        built = _Built()
        token = _building.set(built)
        try:
            for i, conv in enumerate(haystack.conversations):
                messages = [
                    {"role": "assistant" if m.speaker == "assistant" else "user", "content": m.text} for m in conv
                ]
                if not messages:
                    continue
                try:
                    async with self._op_lock:
                        await memory.add(messages, user_id=self.user_id(haystack), run_id=f"c{i}")
                except Exception as exc:  # Mem0 raises its own error types: a failed add is counted, not fatal
                    built.failures += 1
                    built.last_error = f"{type(exc).__name__}: {exc}"
        finally:
            _building.reset(token)
        return built

    async def prepare(self, haystack: Haystack) -> None:
        await self._built.get(haystack)

    async def select(self, haystack: Haystack, question: str) -> Selection:
        built = await self._built.get(haystack)
        if built.failures == len(haystack.conversations) and built.failures:
            raise MarkError(f"mem0 could not add any conversation of the haystack ({built.last_error})")
        memory = await self._get_memory()
        async with self._op_lock:
            started = time.perf_counter()
            found = await memory.search(question, filters={"user_id": self.user_id(haystack)}, top_k=SEARCH_TOP_K)
            retrieval_ms = (time.perf_counter() - started) * 1000.0
        results = found.get("results", []) if isinstance(found, dict) else list(found or [])
        memories = [str(r.get("memory", "")) for r in results if r.get("memory")]
        runs = {str(r.get("run_id", "")) for r in results}
        mids = [m.mid for i, conv in enumerate(haystack.conversations) if f"c{i}" in runs for m in conv]
        context = "\n".join(f"- {text}" for text in memories)
        messages = answer_messages(question, context, ContextKind.MEMORIES, self.ctx.prompts)
        route = f"mem0:{len(memories)} memories"
        if built.failures:
            route += f", {built.failures} failed adds ({built.last_error[:120]})"
        return selection(messages, mids, retrieval_ms=retrieval_ms, route=route, index_usage=built.usage)

    def release(self, haystack: Haystack) -> None:
        """Kept: another case over the same haystack reuses its memories (as for ``mark``)."""
        return None

    async def aclose(self) -> None:
        """Close Mem0's in-process Qdrant now (left to the interpreter's exit, it complains while shutting down)."""
        memory, self._memory = self._memory, None
        client = getattr(getattr(memory, "vector_store", None), "client", None)
        close = getattr(client, "close", None)
        if close is not None:
            await asyncio.to_thread(close)
