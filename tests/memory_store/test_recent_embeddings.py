"""The store embeds a text said a moment ago once: a chat turn stores the message, then recalls with it."""

from __future__ import annotations

import numpy as np

from mark_agents.recall import recall
from memory_store import MemoryStore


class CountingEmbedder:
    """The real model, counting the texts it is asked to embed."""

    def __init__(self, inner) -> None:
        self.inner, self.model_id, self.dim = inner, inner.model_id, inner.dim
        self.texts: list[str] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.texts += texts
        return self.inner.embed(texts)


def test_a_message_stored_then_recalled_is_embedded_once_and_purge_forgets_it(tmp_path, embedder):
    counting = CountingEmbedder(embedder)
    store = MemoryStore(home=tmp_path / "home", embedder=counting)
    message = "My locker code at the gym is 4471."
    store.add_turns([{"user_id": "alice", "role": "user", "content": message}])
    store.add_turns([{"user_id": "alice", "role": "assistant", "content": "Noted, your locker code is 4471."}])
    found = recall(store, message, "alice", budget_tokens=800)
    assert "4471" in found.text
    assert counting.texts.count(message) == 1  # stored, then recalled: one embedding
    np.testing.assert_allclose(store.embed([message])[0], embedder.embed([message])[0], rtol=1e-5, atol=1e-6)
    assert counting.texts.count(message) == 1

    store.purge_user("alice")
    store.embed([message])
    assert counting.texts.count(message) == 2  # purge emptied the cache: nothing derived from alice's text stays
    store.close()


def test_batches_are_not_cached_and_a_cached_vector_is_the_model_s(tmp_path, embedder):
    counting = CountingEmbedder(embedder)
    store = MemoryStore(home=tmp_path / "home", embedder=counting)
    texts = ["I play the cello.", "I live in Lisbon."]
    store.embed(texts)
    store.embed(texts)
    assert counting.texts == texts * 2
    first = store.embed(["I play the cello."])
    again = store.embed(["I play the cello."])
    assert counting.texts.count("I play the cello.") == 3
    assert np.array_equal(first, again) and first.shape == (1, embedder.dim)
    store.close()
