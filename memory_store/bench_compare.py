"""The peers of `mark bench store --compare`: the same memories, users and query vectors in other stores.

- ``langgraph``: LangGraph's SqliteStore with its vector index (sqlite-vec, brute-force cosine over the namespace),
  one namespace per user. This Python's sqlite3 may not load extensions: the store then runs on pysqlite3.
- ``chroma``: plain chromadb, one collection per user, nearest neighbours only (no keywords, no decay).
- ``mem0`` (opt-in: ``--compare mem0``, never part of ``all``): mem0's sync ``Memory`` on its chroma vector store
  (one collection, scoped by ``user_id`` in the metadata), one ``Memory.add(text, user_id=..., infer=False)`` per
  memory (no LLM extraction: stored as given) and ``Memory.search(query, filters={"user_id": ...})``. mem0 stores
  memories one by one (a list of messages too): each is a committed chroma write (about two thirds of the time) and
  a committed history row in SQLite, tens of memories/s on a 2-core machine (21-26/s measured on a busy one) where
  the other peers load in batches; a default run (10,000 memories) would spend 6 minutes or more in it, hence
  opt-in. With chroma mem0 ranks by similarity only (its BM25 scoring needs a store with keyword search; spaCy is
  off, so no entity boost either). Telemetry off, no LLM (one that refuses is plugged in), no network
  (memory_store.mem0_peer); ``pip install 'mark-memory[mem0]'``.

Each peer gets the vectors the embedder made (its embed function looks them up), so the timings are the stores'
own; search is timed with the query vector given, as mark's "without embedding" figure, interleaved with mark's
engines in blocks of queries (`interleaved_latencies`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memory_store.atomic import save_figure

#: The peers of ``--compare all``.
PEERS = ("langgraph", "chroma")
#: Peers run only when named: too slow to load for a default run.
OPT_IN = ("mem0",)
KNOWN = PEERS + OPT_IN
LIMIT = 10
MEM0_MISSING = "--compare mem0 needs the optional extra mem0: pip install 'mark-memory[mem0]' (the mem0ai library)"


class Lookup:
    """An embed function that returns the vectors already made for these texts (no model runs)."""

    def __init__(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        self._by_text = {t: i for i, t in enumerate(texts)}
        self._vectors = vectors

    def add(self, texts: Sequence[str], vectors: np.ndarray) -> None:
        base = len(self._vectors)
        self._vectors = np.concatenate([self._vectors, vectors])
        for i, t in enumerate(texts):
            self._by_text[t] = base + i

    def __call__(self, texts: Sequence[str]) -> list[list[float]]:
        missing = [t for t in texts if t not in self._by_text]
        if missing:
            raise LookupError(f"a peer asked for the embedding of a text the bench did not embed: {missing[0]!r}")
        return [self._vectors[self._by_text[t]].tolist() for t in texts]


def _sqlite_with_extensions() -> Any:
    """A sqlite3 module that can load extensions: the standard one if it can, else pysqlite3."""
    import sqlite3

    conn = sqlite3.connect(":memory:")
    try:
        if hasattr(conn, "enable_load_extension"):
            conn.enable_load_extension(True)
            return sqlite3
    except sqlite3.Error:
        pass
    finally:
        conn.close()
    try:
        import pysqlite3.dbapi2 as sqlite3_ext
    except ImportError as exc:
        raise RuntimeError(
            "this Python's sqlite3 cannot load extensions and pysqlite3 is missing: pip install 'mark-memory[compare]'"
        ) from exc
    return sqlite3_ext


def preflight(peers: Sequence[str]) -> None:
    """Fail before the bench starts when a peer's library is missing (RuntimeError, one line)."""
    if "langgraph" in peers:
        _sqlite_with_extensions()
    if "mem0" in peers:
        from memory_store import mem0_peer

        if not mem0_peer.available():
            raise RuntimeError(MEM0_MISSING)


def timed(fn: Callable[..., object], *args: object, **kwargs: object) -> float:
    """Seconds one call of ``fn`` takes (the benches' one clock)."""
    t = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t


#: A system's scoped search as the bench calls it: (query text, user, query vector).
Search = Callable[[str, str, np.ndarray], object]


@dataclass
class Loaded:
    """A peer with the memories in: what it is, what loading took, and its search (warmed up) to time."""

    what: str
    load_seconds: float
    n: int
    search: Search
    close: Callable[[], None] = field(default=lambda: None)

    def result(self, latencies_ms: Sequence[float]) -> dict[str, Any]:
        return {
            "what": self.what,
            "load_seconds": self.load_seconds,
            "load_per_second_vectors_given": self.n / self.load_seconds if self.load_seconds else 0.0,
            "search_p50_ms_without_embedding": float(np.percentile(latencies_ms, 50)),
            "search_p95_ms_without_embedding": float(np.percentile(latencies_ms, 95)),
        }


#: Queries a system answers in a row before the next system's turn: short enough (~0.1 s) that every system
#: sees the same minutes of a drifting machine, long enough that each runs with its own data in the CPU's caches,
#: as a server answering searches would (one query per turn slowed every system; plain chroma's p50 by ~25%).
BLOCK = 20


def interleaved_latencies(
    searches: Mapping[str, Search], queries: Sequence[tuple[str, str, np.ndarray]], block: int = BLOCK
) -> dict[str, list[float]]:
    """Milliseconds per search of each system, the systems interleaved: the queries go in blocks of ``block`` to
    each system in turn, the order rotating from one block to the next. A busy machine's speed drifts by tens of
    percent within minutes; timed one after another, two systems' p95 ratio moved from 1.8 to 2.7 between runs.
    Interleaved, the drift slows every system alike and their ratios compare like with like."""
    names = list(searches)
    out: dict[str, list[float]] = {n: [] for n in names}
    for k, start in enumerate(range(0, len(queries), block)):
        for j in range(len(names)):
            name = names[(k + j) % len(names)]
            search = searches[name]
            out[name] += [1000 * timed(search, q, u, v) for q, u, v in queries[start : start + block]]
    return out


def _warm(search: Search, queries: Sequence[tuple[str, str, np.ndarray]]) -> None:
    for q, u, v in queries[:10]:
        search(q, u, v)


def load_langgraph(
    home: Path,
    texts: Sequence[str],
    users: Sequence[str],
    vectors: np.ndarray,
    queries: Sequence[tuple[str, str, np.ndarray]],
    batch: int,
) -> Loaded:
    from langgraph.store.base import PutOp
    from langgraph.store.sqlite import SqliteStore

    sqlite = _sqlite_with_extensions()
    lookup = Lookup(texts, vectors)
    lookup.add([q for q, _, _ in queries], np.stack([v for _, _, v in queries]))
    conn = sqlite.connect(str(home / "langgraph.db"), check_same_thread=False, isolation_level=None)
    store = SqliteStore(conn, index={"dims": int(vectors.shape[1]), "embed": lookup, "text_fields": ["text"]})
    store.setup()
    t0 = time.perf_counter()
    for start in range(0, len(texts), batch):
        store.batch(
            [
                PutOp(("memories", users[i]), f"m{i}", {"text": texts[i]})
                for i in range(start, min(start + batch, len(texts)))
            ]
        )
    load_s = time.perf_counter() - t0

    def search(q: str, u: str, v: np.ndarray) -> object:
        return store.search(("memories", u), query=q, limit=LIMIT)

    _warm(search, queries)
    return Loaded("LangGraph SqliteStore + sqlite-vec (dense only)", load_s, len(texts), search, conn.close)


def load_chroma(
    home: Path,
    texts: Sequence[str],
    users: Sequence[str],
    vectors: np.ndarray,
    queries: Sequence[tuple[str, str, np.ndarray]],
    batch: int,
) -> Loaded:
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=str(home / "chroma-plain"), settings=Settings(anonymized_telemetry=False))
    cols: dict[str, Any] = {}

    def col(user: str) -> Any:
        if user not in cols:
            cols[user] = client.get_or_create_collection(
                f"u-{len(cols)}-plain", embedding_function=None, metadata={"hnsw:space": "cosine"}
            )
        return cols[user]

    t0 = time.perf_counter()
    for start in range(0, len(texts), batch):
        by_user: dict[str, list[int]] = {}
        for i in range(start, min(start + batch, len(texts))):
            by_user.setdefault(users[i], []).append(i)
        for u, idx in by_user.items():
            col(u).upsert(ids=[f"m{i}" for i in idx], embeddings=vectors[idx], documents=[texts[i] for i in idx])
    load_s = time.perf_counter() - t0

    def search(q: str, u: str, v: np.ndarray) -> object:
        return col(u).query(query_embeddings=v.reshape(1, -1), n_results=LIMIT, include=["documents", "distances"])

    _warm(search, queries)
    return Loaded("chroma, one collection per user (dense only)", load_s, len(texts), search)


def load_mem0(
    home: Path,
    texts: Sequence[str],
    users: Sequence[str],
    vectors: np.ndarray,
    queries: Sequence[tuple[str, str, np.ndarray]],
    batch: int,
) -> Loaded:
    """mem0 on chroma: one ``add(..., infer=False)`` per memory (mem0 has no bulk add; ``batch`` is unused), search
    scoped by ``user_id``, top 10, no score threshold (the other peers have none)."""
    from memory_store import mem0_peer

    lookup = Lookup(texts, vectors)
    lookup.add([q for q, _, _ in queries], np.stack([v for _, _, v in queries]))
    try:
        memory = mem0_peer.open_memory(home, lookup)
    except ImportError:
        raise RuntimeError(MEM0_MISSING) from None
    t0 = time.perf_counter()
    for text, user in zip(texts, users, strict=True):
        memory.add(text, user_id=user, infer=False)
    load_s = time.perf_counter() - t0

    def search(q: str, u: str, v: np.ndarray) -> object:
        return memory.search(q, filters={"user_id": u}, top_k=LIMIT, threshold=0.0)

    _warm(search, queries)
    return Loaded("mem0 Memory on chroma, add infer=False (dense only)", load_s, len(texts), search, memory.db.close)


LOADERS: dict[str, Callable[..., Loaded]] = {"langgraph": load_langgraph, "chroma": load_chroma, "mem0": load_mem0}


def run_alone(
    name: str,
    home: Path,
    texts: Sequence[str],
    users: Sequence[str],
    vectors: np.ndarray,
    queries: Sequence[tuple[str, str, np.ndarray]],
    batch: int,
) -> dict[str, Any]:
    """One peer loaded and timed on its own (``mark bench store`` interleaves it with the other systems)."""
    loaded = LOADERS[name](home, texts, users, vectors, queries, batch)
    try:
        return loaded.result(interleaved_latencies({name: loaded.search}, queries)[name])
    finally:
        loaded.close()


def plot(result: dict[str, Any], path: Path) -> Path:
    """Bars of search p50 and p95 (query vector given) for mark's engines and the peers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"mark {k}", v) for k, v in result["engines"].items()] + list(result.get("compare", {}).items())
    names = [n for n, _ in rows]
    p50 = [r["search_p50_ms_without_embedding"] for _, r in rows]
    p95 = [r["search_p95_ms_without_embedding"] for _, r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(rows)), 4.2), dpi=110)
    ax.bar(x - 0.2, p50, 0.4, label="p50", color="tab:blue")
    ax.bar(x + 0.2, p95, 0.4, label="p95", color="tab:orange")
    for xi, v in zip(x + 0.2, p95, strict=True):
        ax.annotate(f"{v:.1f}", (xi, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, names, rotation=15, ha="right")
    ax.set_ylabel("ms per scoped search (query vector given)")
    ax.set_title(f"Scoped search, top {LIMIT}: {result['memories']:,} memories, {result['users']} users")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)
