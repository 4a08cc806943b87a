"""mem0 (the ``mem0ai`` library, optional extra ``mem0``) without telemetry, downloads or model calls.

Shared by ``mark bench store --compare mem0`` (memory_store.bench_compare) and the ``mem0`` method of ``mark eval
convomem`` (mark_eval.convomem.answerers.mem0_memory), so that neither imports the other.

- :func:`import_mem0`: the ``mem0`` package with its telemetry off (no PostHog event, no notice fetched from
  GitHub: mem0's notices are gated by the same flag) and spaCy's model download disabled (mem0 would fetch
  ``en_core_web_sm`` on first use when spaCy is installed; without it, BM25 text is not lemmatised and no entities
  are extracted). Its home directory (``MEM0_DIR``, where it writes ``config.json``) goes under ``home`` unless the
  environment already names one.
- :func:`open_memory`: a sync ``mem0.Memory`` on chroma in a directory, offline: its embedder is replaced by a
  function given (the bench's precomputed vectors), its LLM by one that refuses to run. Only ``add(...,
  infer=False)`` and search work on it, which is all the bench does.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

#: Where a URL must be given (mem0 builds OpenAI clients before they are replaced): nothing listens on port 9.
NOWHERE = "http://127.0.0.1:9/v1"


def available() -> bool:
    """Whether mem0ai is installed (without importing it)."""
    return importlib.util.find_spec("mem0") is not None


def import_mem0(home: Path | None) -> ModuleType:
    """The ``mem0`` package with telemetry off and spaCy downloads disabled, its files under ``home``.

    Raises ImportError when mem0ai is not installed: callers turn it into their own one-line error."""
    os.environ["MEM0_TELEMETRY"] = "False"  # read when mem0 is imported: no event ever leaves the machine
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("MEM0_DIR", str(home))
    import mem0
    from mem0.memory import main as mem0_main
    from mem0.memory import telemetry
    from mem0.utils import spacy_models

    # mem0 may have been imported earlier in the process with telemetry on: switch every copy of the flag off
    telemetry.MEM0_TELEMETRY = False
    mem0_main.MEM0_TELEMETRY = False  # type: ignore[attr-defined]
    telemetry._oss_telemetry_shutting_down = True
    telemetry.client_telemetry.posthog = None
    # spaCy, when installed, downloads en_core_web_sm on first use: never at run time here (plain BM25 text).
    spacy_models._load_failed_lemma = True
    spacy_models._load_failed_full = True
    return mem0


class LLMCalled(Exception):
    """mem0 tried to call its LLM where it must not (the bench adds with ``infer=False``)."""


class NoLLM:
    """mem0's LLM interface that refuses: proof that no model is called (and no network reached)."""

    calls = 0

    def generate_response(self, *args: Any, **kwargs: Any) -> str:
        self.calls += 1
        raise LLMCalled("mem0 called its LLM: the bench adds with infer=False and must not reach one")


class Embedder:
    """mem0's embedder interface (``embed(text, memory_action)``, ``embed_batch``) over a batch function."""

    def __init__(self, embed: Callable[[Sequence[str]], Sequence[Sequence[float]]]) -> None:
        self._embed = embed

    def embed(self, text: str, memory_action: str | None = None) -> list[float]:
        return [float(x) for x in self._embed([text])[0]]

    def embed_batch(self, texts: list[str], memory_action: str | None = None) -> list[list[float]]:
        return [[float(x) for x in row] for row in self._embed(list(texts))]


def open_memory(where: Path, embed: Callable[[Sequence[str]], Sequence[Sequence[float]]]) -> Any:
    """A sync ``mem0.Memory`` with its chroma vector store (``where/chroma``, collection ``mark-bench``), its history
    database (``where/history.db``) and its home (``where/home``) in ``where``; embeddings from ``embed``, no LLM.

    Raises ImportError when mem0ai is not installed."""
    mem0 = import_mem0(where / "home")
    from mem0.configs.base import MemoryConfig

    config = MemoryConfig(
        # built by mem0 with placeholders (an OpenAI client makes no request until used), replaced below
        llm={"provider": "openai", "config": {"api_key": "sk-unused", "openai_base_url": NOWHERE}},
        embedder={"provider": "openai", "config": {"api_key": "sk-unused", "openai_base_url": NOWHERE}},
        vector_store={"provider": "chroma", "config": {"collection_name": "mark-bench", "path": str(where / "chroma")}},
        history_db_path=str(where / "history.db"),
    )
    # mem0 warns, once per Memory, that chroma has no keyword search (its BM25 scoring is off): documented instead
    main_log = logging.getLogger("mem0.memory.main")
    level = main_log.level
    main_log.setLevel(logging.ERROR)
    try:
        memory = mem0.Memory(config)
    finally:
        main_log.setLevel(level)
    memory.embedding_model = Embedder(embed)
    memory.llm = NoLLM()
    return memory
