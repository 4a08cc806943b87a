"""chromadb backend: one collection per user key, embeddings always passed explicitly.

Passing embeddings matters: a chroma collection without them falls back to its default embedding
function, which tries to download a model (and fails offline). No document text or user id is stored in
chroma, so purging SQLite and dropping the collection leaves no readable trace.

chroma's persistent client caches each collection's HNSW graph in memory; another process's writes are
not visible until the client is re-created, so `refresh()` resets it (the store calls it when the shared
vector epoch in SQLite moved).

Small groups are held in process memory and searched exactly (`_Hot`): a chroma query costs 1-2 ms per call
whatever the group's size (its count alone ~0.8 ms), a matrix product over a few thousand vectors ~0.05 ms, and a
user's notes are a few thousand at most. The copy follows every write made through this index; `refresh()` drops
it with the client. Groups above `HOT_GROUP_LIMIT` vectors are searched by chroma's HNSW index.

With a `loader` (the store passes one that reads SQLite, which keeps every embedding), a group is written to chroma
only once it outgrows `HOT_GROUP_LIMIT`: below that its copy is loaded from SQLite, and chroma's HNSW insert (~0.4 ms
a vector on 2 cores, most of an add's cost beyond the embedding) is never paid for a graph no search would use. A
group has a chroma collection, or it is small and SQLite holds it; a group that grows past the limit is written to
chroma whole (promoted). Without a loader every group lives in chroma, as in stores made before.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PREFIX = "mark_"
#: Groups with at most this many vectors are searched exactly in process memory (see the module's docstring).
HOT_GROUP_LIMIT = 20_000
#: Vectors held in memory over all groups at most (least recently searched groups go first): ~300 MB at 384
#: dimensions.
HOT_VECTOR_BUDGET = 200_000
#: Reads one group's vectors from the rows: (ids, matrix).
Loader = Callable[[str], tuple[list[str], np.ndarray]]
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def _looks_like_segment(name: str) -> bool:
    return bool(_UUID.match(name))


@dataclass(frozen=True)
class _Hot:
    """One group's vectors in memory, rows L2-normalised (a product is chroma's cosine similarity)."""

    ids: list[str]
    matrix: np.ndarray

    @staticmethod
    def of(ids: list[str], vectors: np.ndarray) -> _Hot:
        if not ids:  # an empty group (every vector deleted, or nothing written yet): width unknown until a write
            m = np.asarray(vectors, dtype=np.float32)
            return _Hot([], np.zeros((0, m.shape[1] if m.ndim == 2 else 0), np.float32))
        m = np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1)
        norms = np.linalg.norm(m, axis=1, keepdims=True)
        return _Hot(list(ids), m / np.where(norms == 0, 1, norms))

    def upsert(self, ids: list[str], vectors: np.ndarray) -> _Hot:
        new = _Hot.of(ids, vectors)
        if not new.ids:
            return self
        if not self.ids:
            return new
        if new.matrix.shape[1] != self.matrix.shape[1]:
            raise ValueError("dimension changed")
        fresh = {i: n for n, i in enumerate(new.ids)}
        keep = [n for n, i in enumerate(self.ids) if i not in fresh]
        return _Hot([self.ids[n] for n in keep] + new.ids, np.concatenate([self.matrix[keep], new.matrix]))

    def delete(self, ids: list[str]) -> _Hot:
        gone = set(ids)
        keep = [n for n, i in enumerate(self.ids) if i not in gone]
        return _Hot([self.ids[n] for n in keep], self.matrix[keep])

    def query(self, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        if not self.ids:
            return []
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(q))
        sims = self.matrix @ (q / norm if norm else q)
        k = min(k, len(self.ids))
        top = np.argpartition(-sims, k - 1)[:k] if k < len(self.ids) else np.arange(len(self.ids))
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(self.ids[i], float(sims[i])) for i in top]


class ChromaIndex:
    persistent = True

    def __init__(self, path: Path, loader: Loader | None = None) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._client = None
        self._loader = loader
        self._collections: dict[str, object] = {}
        self._absent: set[str] = set()  # groups known to have no collection (small ones, with a loader)
        self._hot: OrderedDict[str, _Hot] = OrderedDict()
        self._big: set[str] = set()  # groups known to be above HOT_GROUP_LIMIT

    def _get_client(self):
        if self._client is None:
            import chromadb
            from chromadb.config import Settings

            self._client = chromadb.PersistentClient(
                path=str(self.path), settings=Settings(anonymized_telemetry=False, allow_reset=True)
            )
        return self._client

    def _collection(self, user_key: str, create: bool):
        name = PREFIX + user_key
        col = self._collections.get(name)
        if col is not None:
            return col
        if not create and user_key in self._absent:
            return None
        client = self._get_client()
        if create:
            col = client.get_or_create_collection(name, embedding_function=None, metadata={"hnsw:space": "cosine"})
            self._absent.discard(user_key)
        else:
            try:
                col = client.get_collection(name, embedding_function=None)
            except Exception:  # chroma raises NotFoundError/ValueError depending on the version
                self._absent.add(user_key)
                return None
        self._collections[name] = col
        return col

    def _small(self, user_key: str) -> bool:
        """Does SQLite alone hold this group (a loader is set and the group has no collection)?"""
        return self._loader is not None and self._collection(user_key, create=False) is None

    def _small_group(self, user_key: str) -> _Hot | None:
        """A small group's copy, loaded from the rows on first use; None once it outgrew the limit (promoted)."""
        hot = self._hot.get(user_key)
        if hot is not None:
            self._hot.move_to_end(user_key)
            return hot
        assert self._loader is not None
        ids, vectors = self._loader(user_key)
        if len(ids) > HOT_GROUP_LIMIT:
            self._write(self._collection(user_key, create=True), ids, vectors)
            self._big.add(user_key)
            return None
        self._keep(user_key, _Hot.of(ids, vectors))
        return self._hot.get(user_key)

    @staticmethod
    def _write(col: object, ids: list[str], vectors: np.ndarray) -> None:
        step = 5000  # below chroma's max batch size (5461)
        for i in range(0, len(ids), step):
            col.upsert(ids=ids[i : i + step], embeddings=np.asarray(vectors[i : i + step], dtype=np.float32))  # type: ignore[attr-defined]

    def follows_rows(self, user_key: str) -> bool:
        """Never: a write to a small group also checks whether it outgrew the limit, which moves it into chroma
        (where a check looks for a group that large); so every write is applied."""
        return False

    def upsert(self, user_key: str, ids: list[str], vectors: np.ndarray) -> None:
        if not ids:
            return
        with self._lock:
            if self._small(user_key):
                # The rows hold this write already: a copy loaded now has it; one held before takes it.
                loaded = user_key in self._hot
                hot = self._small_group(user_key)
                if hot is not None and loaded:
                    try:
                        hot = hot.upsert(list(ids), np.asarray(vectors))
                    except ValueError:
                        hot = None
                    self._keep(user_key, hot)
                    if hot is not None and len(hot.ids) > HOT_GROUP_LIMIT:
                        self._small_group(user_key)  # dropped by _keep: read whole from the rows and promoted
                return
            col = self._collection(user_key, create=True)
            self._write(col, ids, vectors)
            hot = self._hot.get(user_key)
            if hot is not None:
                try:
                    hot = hot.upsert(list(ids), np.asarray(vectors))
                except ValueError:
                    hot = None
                self._keep(user_key, hot)

    def delete(self, user_key: str, ids: list[str]) -> None:
        if not ids:
            return
        with self._lock:
            col = self._collection(user_key, create=False)
            if col is not None:
                col.delete(ids=ids)
            hot = self._hot.get(user_key)
            if hot is not None:
                self._hot[user_key] = hot.delete(list(ids))
            if col is not None:
                self._big.discard(user_key)

    def drop_user(self, user_key: str) -> None:
        with self._lock:
            self._collections.pop(PREFIX + user_key, None)
            self._hot.pop(user_key, None)
            self._big.discard(user_key)
            self._absent.discard(user_key)
            with contextlib.suppress(Exception):
                self._get_client().delete_collection(PREFIX + user_key)
            self._scrub()

    def _scrub(self) -> None:
        """Leave nothing of a dropped collection on disk.

        chroma frees the rows of a deleted collection but keeps them in free pages of its SQLite file, and
        keeps the collection's HNSW segment directory: VACUUM the file and remove segment directories that no
        live segment owns.
        """
        db_file = self.path / "chroma.sqlite3"
        if not db_file.exists():
            return
        conn = sqlite3.connect(db_file, timeout=30)
        try:
            live = {row[0] for row in conn.execute("SELECT id FROM segments")}
            conn.execute("VACUUM")
        finally:
            conn.close()
        for child in self.path.iterdir():
            if child.is_dir() and _looks_like_segment(child.name) and child.name not in live:
                shutil.rmtree(child, ignore_errors=True)

    def _keep(self, user_key: str, hot: _Hot | None) -> None:
        """Hold a group in memory (most recently used last), within the limits; None forgets it."""
        self._hot.pop(user_key, None)
        if hot is None:
            return
        if len(hot.ids) > HOT_GROUP_LIMIT:
            self._big.add(user_key)
            return
        self._hot[user_key] = hot
        total = sum(len(h.ids) for h in self._hot.values())
        while total > HOT_VECTOR_BUDGET and len(self._hot) > 1:
            _, dropped = self._hot.popitem(last=False)
            total -= len(dropped.ids)

    def _hot_group(self, user_key: str, col: object) -> _Hot | None:
        """The group's in-memory copy, loaded from chroma on first use; None for a group too large to hold."""
        hot = self._hot.get(user_key)
        if hot is not None:
            self._hot.move_to_end(user_key)
            return hot
        if user_key in self._big:
            return None
        if col.count() > HOT_GROUP_LIMIT:  # type: ignore[attr-defined]
            self._big.add(user_key)
            return None
        got = col.get(include=["embeddings"])  # type: ignore[attr-defined]
        vectors = got["embeddings"]
        ids = list(got["ids"])
        if ids and len({len(v) for v in vectors}) != 1:
            return None
        dim = len(vectors[0]) if ids else 0
        self._keep(user_key, _Hot.of(ids, np.asarray(vectors, dtype=np.float32).reshape(len(ids), dim)))
        return self._hot.get(user_key)

    def query(self, user_key: str, vector: np.ndarray, k: int) -> list[tuple[str, float]]:
        with self._lock:
            col = self._collection(user_key, create=False)
            if col is None:
                if self._loader is None:
                    return []
                try:
                    hot = self._small_group(user_key)
                except ValueError:  # vectors of two widths in the rows (an old import): `check` reports them
                    return []
                if hot is not None:
                    if hot.ids and hot.matrix.shape[1] != np.asarray(vector).size:
                        return []  # another model's vectors: nothing is near
                    return hot.query(vector, k)
                col = self._collection(user_key, create=False)  # promoted just now
            hot = self._hot_group(user_key, col)
            if hot is None or (hot.ids and hot.matrix.shape[1] != np.asarray(vector).size):
                res = col.query(
                    query_embeddings=np.asarray(vector, dtype=np.float32).reshape(1, -1),
                    n_results=k,
                    include=["distances"],
                )
                return [(i, 1.0 - float(d)) for i, d in zip(res["ids"][0], res["distances"][0], strict=True)]
        return hot.query(vector, k)

    def count(self, user_key: str) -> int:
        with self._lock:
            col = self._collection(user_key, create=False)
            if col is not None:
                return col.count()
            hot = self._hot.get(user_key)  # a small group just searched is held: no need to read its rows
            return len(hot.ids) if hot is not None else len(self.ids(user_key))

    def ids(self, user_key: str) -> set[str]:
        with self._lock:
            col = self._collection(user_key, create=False)
            if col is None:
                if self._loader is None:
                    return set()
                try:
                    ids = self._loader(user_key)[0]
                except ValueError:  # vectors of two widths in the rows: none is usable until `check --repair`
                    return set()
                # A group past the limit belongs in chroma: with no collection, its vectors are lost from the index.
                return set(ids) if len(ids) <= HOT_GROUP_LIMIT else set()
            return set(col.get(include=[])["ids"])

    def user_keys(self) -> set[str]:
        with self._lock:
            names = [c if isinstance(c, str) else c.name for c in self._get_client().list_collections()]
        return {n[len(PREFIX) :] for n in names if n.startswith(PREFIX)}

    def refresh(self) -> None:
        with self._lock:
            from chromadb.api.shared_system_client import SharedSystemClient

            self._collections.clear()
            self._absent.clear()
            self._hot.clear()
            self._big.clear()
            self._client = None
            SharedSystemClient.clear_system_cache()

    def reset(self) -> None:
        with self._lock:
            for key in self.user_keys():
                with contextlib.suppress(Exception):
                    self._get_client().delete_collection(PREFIX + key)
            self._collections.clear()
            self._absent.clear()
            self._hot.clear()
            self._big.clear()
            self._scrub()

    def close(self) -> None:
        with self._lock:
            self._collections.clear()
            self._absent.clear()
            self._hot.clear()
            self._big.clear()
            self._client = None
