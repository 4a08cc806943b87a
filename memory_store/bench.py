"""`mark bench store`: throughput and latency of the store on synthetic memories, on one engine or all of them, and
beside them other stores on the same data (`--compare`, memory_store.bench_compare: langgraph and chroma, which
`--compare all` runs, and mem0, opt-in: it adds one memory at a time, tens per second).

Memories are generated sentences (distinct, realistic length: 8-16 words); queries are paraphrase-like
sentences over the same vocabulary. The embedding model alone runs first on the same texts, in the same batches
(the vectors the peers get); every engine and peer then gets the same memories, users and query vectors. An
engine's add share is measured against the embedder alone on each batch, in turn with its add, so a machine whose
speed drifts between passes moves both clocks alike. Searches are interleaved the same way: every query goes to
each engine and peer in turn (`bench_compare.interleaved_latencies`). Figures depend on the machine: report them
with it, and compare ratios measured in one run.
"""

from __future__ import annotations

import functools
import os
import platform
import random
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from memory_store import bench_compare
from memory_store.bench_compare import timed
from memory_store.config import StoreSettings
from memory_store.embeddings import Embedder, get_embedder
from memory_store.models import MemoryKind, NewMemory
from memory_store.store import MemoryStore

ENGINES = ("chroma", "exact", "postgres")

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


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class _Engine:
    """One of mark's engines with the memories added: its store, kept open until every system's searches ran."""

    backend: str
    home: Path
    store: MemoryStore
    add_s: float
    embed_s: float
    store_embed_s: float  # the embedding model's time inside the adds (`_ClockedEmbedder`)
    first_ms: list[float]


class _ClockedEmbedder:
    """The embedding model with a clock on it, as an engine's store's embedder: an add's time splits into the
    model's and the store's own. The paired share moves by +-0.015 from run to run because the model's own time
    does (a 1,000-text batch takes 1.8-2.0 s); the store's own time, ~70 ms per 1,000 memories, is read apart from
    that noise."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.model_id = inner.model_id
        self.dim = inner.dim
        self.seconds = 0.0

    def embed(self, texts: list[str]) -> np.ndarray:
        t = time.perf_counter()
        try:
            return self.inner.embed(texts)
        finally:
            self.seconds += time.perf_counter() - t


def _add_to_engine(
    stack: ExitStack,
    settings: StoreSettings,
    home: Path,
    backend: str,
    url: str | None,
    items: list[NewMemory],
    batch: int,
    embedder: Embedder,
    queries: list[tuple[str, str, np.ndarray]],
    progress: bool,
) -> _Engine:
    """One engine: add (the clock stops when every memory is searchable), then each user's first search.

    The add is paired with the embedding model alone, batch by batch: each batch is embedded alone and added, in
    turn (the order alternates), so both clocks run in the same minutes and the share compares like with like on a
    machine whose speed drifts. The store closes (and the bench's own Postgres stops) when ``stack`` closes."""
    home.mkdir(parents=True, exist_ok=True)
    if backend == "postgres" and url is None:
        from memory_store import pg_dev

        stack.callback(pg_dev.stop, home / "postgres")  # stopping a server that never started is a no-op
    clocked = _ClockedEmbedder(embedder)
    store = MemoryStore(_engine_settings(settings, home, backend, url), embedder=clocked)
    stack.callback(store.close)
    store.embed(["warm up"])
    store.search("warm up", "bench-warm-up")  # a running server has its vector index open (chroma: ~1 s import)
    clocked.seconds = 0.0
    add_s = embed_s = 0.0
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not progress,
    ) as bar:
        task = bar.add_task(f"adding ({backend})", total=len(items))
        for k, start in enumerate(range(0, len(items), batch)):
            chunk = items[start : start + batch]
            texts = [m.text for m in chunk]
            if k % 2:
                add_s += timed(store.add_many, chunk)
                embed_s += timed(embedder.embed, texts)
            else:
                embed_s += timed(embedder.embed, texts)
                add_s += timed(store.add_many, chunk)
            bar.advance(task, len(chunk))
        add_s += timed(store.flush_vectors)  # every added memory searchable
    store_embed_s = clocked.seconds
    # A user's first search after the store opens loads their vectors (chroma's group is then held in memory):
    # timed apart, once per user, so the figures of the interleaved searches are the steady state a running
    # server sees.
    first: list[float] = []
    for user in dict.fromkeys(u for _, u, _ in queries):
        q, u, v = next(x for x in queries if x[1] == user)
        first.append(1000 * timed(store.search, q, u, query_embedding=v))
    return _Engine(backend, home, store, add_s, embed_s, store_embed_s, first)


def _finish_engine(
    engine: _Engine,
    without: list[float],
    queries: list[tuple[str, str, np.ndarray]],
    items: list[NewMemory],
    url: str | None,
) -> dict[str, object]:
    """Search embedding the query (the embedder dominates: timed alone), check and disk. The store stays open: the
    run's stack closes it. (Every system is open at once, so the run reports one peak RSS, not one per system.)"""
    store = engine.store
    with_emb = [1000 * timed(store.search, q, u) for q, u, _ in queries]
    t = time.perf_counter()
    report = store.check()
    check_s = time.perf_counter() - t
    disk_mb = _disk_mb(store, engine.home)
    if url is not None:  # a database of the caller's: the bench's users go again
        for u in sorted({m.user_id for m in items}):
            store.purge_user(u)
    n = len(items)
    own_s = engine.add_s - engine.store_embed_s
    return {
        "engine": store.engine,
        "backend": engine.backend,
        "add_seconds": engine.add_s,
        "add_per_second": n / engine.add_s,
        "embed_alone_per_second": n / engine.embed_s,
        "add_share_of_embedding_rate": engine.embed_s / engine.add_s,
        # The store's own part of the adds (everything but the embedding model), and the share it leaves: the
        # embedder alone's time over that time plus the store's own.
        "add_store_own_ms_per_1000": 1e6 * own_s / n,
        "add_share_by_store_own_time": engine.embed_s / (engine.embed_s + own_s),
        "search_p50_ms_without_embedding": _pct(without, 50),
        "search_p95_ms_without_embedding": _pct(without, 95),
        "search_p50_ms_with_embedding": _pct(with_emb, 50),
        "search_p95_ms_with_embedding": _pct(with_emb, 95),
        "search_mean_ms_with_embedding": statistics.fmean(with_emb),
        "first_search_per_user_p50_ms": _pct(engine.first_ms, 50),
        "check_seconds": check_s,
        "check_ok": report.ok,
        "disk_mb": disk_mb,
    }


def _search_with_vector(store: MemoryStore, query: str, user: str, vector: np.ndarray) -> object:
    return store.search(query, user, query_embedding=vector)


def _ratios(engines: dict[str, dict], peers: dict[str, dict]) -> dict[str, float]:
    """Search p50/p95 (query vector given) of every other system over mark's embedded engine's (chroma, else the
    first engine run): above 1, mark is faster."""
    if not engines:
        return {}
    base_name = "chroma" if "chroma" in engines else next(iter(engines))
    base = engines[base_name]
    out: dict[str, float] = {}
    others = [(f"mark {k}", v) for k, v in engines.items() if k != base_name] + list(peers.items())
    for name, r in others:
        for q in ("p50", "p95"):
            key = f"search_{q}_ms_without_embedding"
            if base[key]:
                out[f"{name} / mark {base_name} ({q})"] = r[key] / base[key]
    return out


def run_store_bench(
    settings: StoreSettings,
    *,
    memories: int,
    users: int,
    queries: int,
    batch: int,
    backend: str | Sequence[str],
    keep: Path | None,
    progress: bool,
    url: str | None = None,
    compare: Sequence[str] = (),
    plot: Path | None = None,
) -> dict[str, object]:
    """Add throughput against the embedding model alone on the same texts (measured first), scoped search latency
    with and without the query's embedding, check time, disk and peak RSS, for each engine named; then the peers
    named in ``compare`` on the same memories and query vectors."""
    backends = [backend] if isinstance(backend, str) else list(backend)
    bench_compare.preflight(compare)  # a peer's missing library: one line before minutes of work
    rng = random.Random(7)
    home = keep or Path(tempfile.mkdtemp(prefix="mark-bench-"))
    try:
        embedder = get_embedder(settings.embedding_model, settings.embedding_device)
        embedder.embed(["warm up"])
        user_ids = [f"bench-user-{i}" for i in range(users)]
        items = [
            NewMemory(text=sentence(rng, i), user_id=user_ids[i % users], kind=list(MemoryKind)[i % 3])
            for i in range(memories)
        ]
        rng.shuffle(items)
        t0 = time.perf_counter()
        parts = [embedder.embed([m.text for m in items[start : start + batch]]) for start in range(0, memories, batch)]
        embed_s = time.perf_counter() - t0
        vectors = np.concatenate(parts)
        qtexts = [
            f"What does {rng.choice(SUBJECTS).lower()} think about {rng.choice(OBJECTS)}?" for _ in range(queries)
        ]
        qusers = [rng.choice(user_ids) for _ in range(queries)]
        qvecs = embedder.embed(qtexts)
        qs = list(zip(qtexts, qusers, qvecs, strict=True))
        with ExitStack() as stack:
            added: dict[str, _Engine] = {}
            for b in backends:
                added[b] = _add_to_engine(stack, settings, home / b, b, url, items, batch, embedder, qs, progress)
            loaded: dict[str, bench_compare.Loaded] = {}
            for name in compare:
                where = home / f"peer-{name}"
                where.mkdir(parents=True, exist_ok=True)
                loaded[name] = bench_compare.LOADERS[name](
                    where, [m.text for m in items], [m.user_id for m in items], vectors, qs, batch
                )
                stack.callback(loaded[name].close)
            searches: dict[str, bench_compare.Search] = {
                f"mark {b}": functools.partial(_search_with_vector, e.store) for b, e in added.items()
            }
            searches.update({name: p.search for name, p in loaded.items()})
            lat = bench_compare.interleaved_latencies(searches, qs)
            engines = {b: _finish_engine(e, lat[f"mark {b}"], qs, items, url) for b, e in added.items()}
            peers: dict[str, dict] = {}
            for name, p in loaded.items():
                peers[name] = p.result(lat[name])
    finally:
        if keep is None:
            shutil.rmtree(home, ignore_errors=True)
    result: dict[str, object] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "memories": memories,
        "users": users,
        "queries": queries,
        "embed_per_second": memories / embed_s,
        "engines": engines,
        "compare": peers,
        "ratios": _ratios(engines, peers),
        "peak_rss_mb": _rss_mb(),
    }
    if plot is not None:
        result["plot"] = str(bench_compare.plot(result, plot))
    return result
