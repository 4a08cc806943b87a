"""An in-memory message index for one haystack: dense, keyword (BM25) or both fused by reciprocal rank.

Deliberately not the memory store: the benchmark's RAG arm must work on any haystack in memory, and the
embedder is wrapped in a text-keyed cache so conversations shared between sizes are embedded once.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from mark_eval.convomem.bm25 import BM25
from mark_eval.convomem.schema import Haystack
from memory_store.embeddings import Embedder

RetrievalMode = Literal["dense", "keyword", "hybrid"]
RRF_K = 60


def rrf(rankings: list[np.ndarray], n: int, k: int = RRF_K) -> np.ndarray:
    """Reciprocal-rank fusion of several rankings (arrays of document indices, best first)."""
    fused = np.zeros(n, dtype=np.float64)
    for ranking in rankings:
        fused[ranking] += 1.0 / (k + np.arange(1, len(ranking) + 1))
    return np.argsort(-fused, kind="stable")


class MessageIndex:
    """Ranks every message of a haystack for a query. Build once per haystack, query per question."""

    def __init__(self, haystack: Haystack, mode: RetrievalMode, embedder: Embedder | None) -> None:
        if mode != "keyword" and embedder is None:
            raise ValueError(f"retrieval mode {mode!r} needs an embedder")
        self.mode = mode
        self.messages = haystack.messages
        texts = [m.text for m in self.messages]
        self.bm25 = BM25(texts) if mode != "dense" else None
        self.embedder = embedder
        self.vectors = embedder.embed(texts) if (embedder is not None and mode != "keyword") else None

    def rank(self, query: str) -> np.ndarray:
        """Indices into ``messages``, best first. Keyword-only drops messages sharing no term with the query."""
        n = len(self.messages)
        rankings: list[np.ndarray] = []
        if self.vectors is not None and self.embedder is not None:
            q = self.embedder.embed([query])[0]
            rankings.append(np.argsort(-(self.vectors @ q), kind="stable"))
        if self.bm25 is not None:
            scores = self.bm25.scores(query)
            order = np.argsort(-scores, kind="stable")
            rankings.append(order[scores[order] > 0])
        if len(rankings) == 1:
            return rankings[0]
        return rrf(rankings, n)
