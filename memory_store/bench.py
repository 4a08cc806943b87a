"""`mark bench store`: throughput and latency of the store on synthetic memories.

Memories are generated sentences (distinct, realistic length: 8-16 words); queries are paraphrase-like
sentences over the same vocabulary. Figures depend on the machine: report them with it.
"""

from __future__ import annotations

import platform
import random
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from memory_store.config import StoreSettings
from memory_store.models import MemoryKind, NewMemory
from memory_store.store import MemoryStore

SUBJECTS = ["My sister", "My manager", "I", "My neighbour", "Our team", "My dog", "My partner", "My son", "The client"]
VERBS = ["prefers", "moved to", "is allergic to", "works on", "bought", "is learning", "visited", "hates", "plans"]
OBJECTS = [
    "Lisbon",
    "peanuts",
    "the quarterly report",
    "a red bicycle",
    "Japanese lessons",
    "the Denver office",
    "vegetarian food",
    "jazz concerts",
    "a sourdough starter",
    "the budget review",
    "hiking trails",
    "Python",
    "early meetings",
    "the beach house",
    "a new laptop",
    "spicy ramen",
    "chess openings",
    "the marathon",
]
TAILS = [
    "since last spring",
    "every weekend",
    "according to the last call",
    "for the next project",
    "",
    "",
    "because of the new schedule",
    "after the trip",
    "this month",
    "with a tight deadline",
]


def sentence(rng: random.Random, n: int) -> str:
    tail = rng.choice(TAILS)
    return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)} {tail} (note {n})".replace("  ", " ")


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else 0.0


def _engine_settings(settings: StoreSettings, home: Path, backend: str, url: str | None) -> StoreSettings:
    """The bench's store: SQLite with chroma or exact vectors under ``home``, or Postgres (``url``, else a private
    server started with pgserver under ``home``)."""
    if backend != "postgres":
        return settings.model_copy(update={"home": home, "vector_backend": backend, "store_url": None})
    if url is None:
        from memory_store import pg_dev

        url = pg_dev.start(home / "postgres")
    return settings.model_copy(update={"home": home, "store_url": url})


def _disk_mb(store: MemoryStore, home: Path) -> float:
    if store.engine == "postgres":
        return store.db.query("SELECT pg_database_size(current_database()) AS n")[0]["n"] / 1e6
    return sum(f.stat().st_size for f in home.rglob("*") if f.is_file()) / 1e6


def run_store_bench(
    settings: StoreSettings,
    *,
    memories: int,
    users: int,
    queries: int,
    batch: int,
    backend: str,
    keep: Path | None,
    progress: bool,
    url: str | None = None,
) -> dict[str, object]:
    """Add throughput (the embedding model alone on the same texts first; the clock stops when every memory is
    searchable), scoped search latency with and without the query's embedding, check time, disk and peak RSS."""
    rng = random.Random(7)
    home = keep or Path(tempfile.mkdtemp(prefix="mark-bench-"))
    private_pg = backend == "postgres" and url is None
    try:
        store = MemoryStore(_engine_settings(settings, home, backend, url))
        store.embed(["warm up"])
        user_ids = [f"bench-user-{i}" for i in range(users)]
        items = [
            NewMemory(text=sentence(rng, i), user_id=user_ids[i % users], kind=list(MemoryKind)[i % 3])
            for i in range(memories)
        ]
        rng.shuffle(items)
        t0 = time.perf_counter()
        for start in range(0, memories, batch):
            store.embed([m.text for m in items[start : start + batch]])
        embed_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            disable=not progress,
        ) as bar:
            task = bar.add_task("adding", total=memories)
            for start in range(0, memories, batch):
                store.add_many(items[start : start + batch])
                bar.advance(task, min(batch, memories - start))
            store.flush_vectors()  # every added memory searchable
        add_s = time.perf_counter() - t0

        qtexts = [
            f"What does {rng.choice(SUBJECTS).lower()} think about {rng.choice(OBJECTS)}?" for _ in range(queries)
        ]
        qusers = [rng.choice(user_ids) for _ in range(queries)]
        qvecs = store.embed(qtexts)
        for q, u, v in zip(qtexts[:10], qusers[:10], qvecs[:10], strict=True):  # warm caches
            store.search(q, u, query_embedding=v)
        without, with_emb = [], []
        for q, u, v in zip(qtexts, qusers, qvecs, strict=True):
            t = time.perf_counter()
            store.search(q, u, query_embedding=v)
            without.append((time.perf_counter() - t) * 1000)
        for q, u in zip(qtexts, qusers, strict=True):
            t = time.perf_counter()
            store.search(q, u)
            with_emb.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        report = store.check()
        check_s = time.perf_counter() - t
        disk_mb = _disk_mb(store, home)
        engine = store.engine
        if url is not None:  # a database of the caller's: the bench's users go again
            for u in user_ids:
                store.purge_user(u)
        store.close()
    finally:
        if private_pg and keep is None:
            from memory_store import pg_dev

            pg_dev.stop(home / "postgres")
        if keep is None:
            shutil.rmtree(home, ignore_errors=True)
    return {
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, {platform.python_version()}",
        "engine": engine,
        "backend": backend,
        "memories": memories,
        "users": users,
        "embed_per_second": memories / embed_s,
        "add_seconds": add_s,
        "add_per_second": memories / add_s,
        "add_share_of_embedding_rate": embed_s / add_s,
        "search_p50_ms_without_embedding": _pct(without, 50),
        "search_p95_ms_without_embedding": _pct(without, 95),
        "search_p50_ms_with_embedding": _pct(with_emb, 50),
        "search_p95_ms_with_embedding": _pct(with_emb, 95),
        "search_mean_ms_with_embedding": statistics.fmean(with_emb),
        "check_seconds": check_s,
        "check_ok": report.ok,
        "disk_mb": disk_mb,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
