"""Leave a store as the unfixed import of issue 8 did: a vector write that chroma refuses, waiting in the outbox."""

from __future__ import annotations

import numpy as np

from memory_store import MemoryStore
from memory_store.validation import user_key


def legacy_wedge(store: MemoryStore) -> str:
    """A 4-float embedding for mallory reaches the index (her chroma collection takes 4 dimensions), then a real
    memory of mallory is added, whose 384-dimensional write the index refuses. Returns that memory's id.

    The 4-float row is written with the store's own SQL helpers: the API no longer accepts such a vector.
    """
    m = store.add("Mallory's first note.", "mallory")
    with store.db.write() as w:
        w.execute("UPDATE memories SET embedding = ? WHERE id = ?", [np.zeros(4, np.float32).tobytes(), m.id])
    store.index.drop_user(user_key("mallory"))
    # Stores of that time kept every group in chroma (today a small group stays in SQLite until it outgrows
    # chroma.HOT_GROUP_LIMIT): mallory's group is a chroma collection again.
    store.index._collection(user_key("mallory"), create=True)
    with store.db.write() as w:
        store.db.enqueue_vectors(w, "upsert", user_key("mallory"), [m.id])
    store.flush_vectors()  # the 4-dimensional collection exists now, as after the import
    refused = store.add("Mallory likes strong coffee.", "mallory")
    store.flush_vectors()  # before the fix: chroma's error here, and at every later open, for every user
    return refused.id
