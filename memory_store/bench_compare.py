"""The peers of `mark bench store --compare`: the same memories, users and query vectors in other stores.

- ``langgraph``: LangGraph's SqliteStore with its vector index (sqlite-vec, brute-force cosine over the namespace),
  one namespace per user. This Python's sqlite3 may not load extensions: the store then runs on pysqlite3.
- ``chroma``: plain chromadb, one collection per user, nearest neighbours only (no keywords, no decay).

Each peer gets the vectors the embedder made (its embed function looks them up), so the timings are the stores'
own; search is timed with the query vector given, as mark's "without embedding" figure.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

PEERS = ("langgraph", "chroma")
LIMIT = 10


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


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def run_langgraph(
    home: Path,
    texts: Sequence[str],
    users: Sequence[str],
    vectors: np.ndarray,
    queries: Sequence[tuple[str, str, np.ndarray]],
    batch: int,
) -> dict[str, Any]:
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
    for q, u, _ in queries[:10]:
        store.search(("memories", u), query=q, limit=LIMIT)
    lat = [_timed(lambda q=q, u=u: store.search(("memories", u), query=q, limit=LIMIT)) for q, u, _ in queries]
    conn.close()
    return _result("LangGraph SqliteStore + sqlite-vec (dense only)", load_s, len(texts), lat)


def run_chroma(
    home: Path,
    texts: Sequence[str],
    users: Sequence[str],
    vectors: np.ndarray,
    queries: Sequence[tuple[str, str, np.ndarray]],
    batch: int,
) -> dict[str, Any]:
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

    def search(u: str, v: np.ndarray) -> object:
        return col(u).query(query_embeddings=v.reshape(1, -1), n_results=LIMIT, include=["documents", "distances"])

    for _, u, v in queries[:10]:
        search(u, v)
    lat = [_timed(lambda u=u, v=v: search(u, v)) for _, u, v in queries]
    return _result("chroma, one collection per user (dense only)", load_s, len(texts), lat)


def _result(what: str, load_s: float, n: int, lat: list[float]) -> dict[str, Any]:
    return {
        "what": what,
        "load_seconds": load_s,
        "load_per_second_vectors_given": n / load_s if load_s else 0.0,
        "search_p50_ms_without_embedding": float(np.percentile(lat, 50)),
        "search_p95_ms_without_embedding": float(np.percentile(lat, 95)),
    }


RUNNERS = {"langgraph": run_langgraph, "chroma": run_chroma}


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
