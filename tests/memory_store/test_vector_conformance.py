"""One conformance suite that every vector-index backend must pass."""

from __future__ import annotations

import numpy as np
import pytest

from memory_store.vectors import ChromaIndex, ExactIndex


def unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture(params=["chroma", "exact"])
def index(request, tmp_path):
    idx = ChromaIndex(tmp_path / "vectors") if request.param == "chroma" else ExactIndex()
    yield idx
    idx.close()


def test_query_returns_nearest_first_with_cosine(index):
    index.upsert("ua", ["x", "y", "z"], np.stack([unit([1, 0, 0]), unit([0.9, 0.1, 0]), unit([0, 0, 1])]))
    got = index.query("ua", unit([1, 0, 0]), 2)
    assert [i for i, _ in got] == ["x", "y"]
    assert got[0][1] == pytest.approx(1.0, abs=1e-4)
    assert got[1][1] == pytest.approx(float(unit([0.9, 0.1, 0]) @ unit([1, 0, 0])), abs=1e-4)


def test_groups_are_isolated_and_dropped_alone(index):
    index.upsert("ua", ["a1"], np.stack([unit([1, 0, 0])]))
    index.upsert("ub", ["b1"], np.stack([unit([1, 0, 0])]))
    assert [i for i, _ in index.query("ua", unit([1, 0, 0]), 10)] == ["a1"]
    index.drop_user("ua")
    assert index.query("ua", unit([1, 0, 0]), 10) == []
    assert index.ids("ub") == {"b1"}


def test_upsert_overwrites_and_delete_removes(index):
    index.upsert("ua", ["a"], np.stack([unit([1, 0, 0])]))
    index.upsert("ua", ["a"], np.stack([unit([0, 1, 0])]))
    assert index.count("ua") == 1
    assert index.query("ua", unit([0, 1, 0]), 1)[0][1] == pytest.approx(1.0, abs=1e-4)
    index.delete("ua", ["a", "never-existed"])
    assert index.count("ua") == 0
    assert index.query("missing-user", unit([0, 1, 0]), 3) == []


def test_an_emptied_group_and_an_empty_write_keep_working(index):
    index.upsert("ua", ["a"], np.stack([unit([1, 0, 0])]))
    assert index.query("ua", unit([1, 0, 0]), 3)[0][0] == "a"  # chroma: the group is now held in memory too
    index.delete("ua", ["a"])
    assert index.query("ua", unit([1, 0, 0]), 3) == []
    index.upsert("ua", [], np.zeros((0, 3), np.float32))  # e.g. a re-derivation that kept no note
    index.upsert("ua", [], [])
    index.upsert("ua", ["b"], np.stack([unit([0, 1, 0])]))
    assert [i for i, _ in index.query("ua", unit([0, 1, 0]), 3)] == ["b"]


def test_chroma_group_emptied_in_another_process_is_searched_and_refilled(tmp_path):
    first = ChromaIndex(tmp_path / "vectors")
    first.upsert("ua", ["a"], np.stack([unit([1, 0, 0])]))
    first.delete("ua", ["a"])
    first.close()
    again = ChromaIndex(tmp_path / "vectors")  # the group exists on disk with no vector in it
    assert again.query("ua", unit([1, 0, 0]), 3) == []
    again.upsert("ua", ["b"], np.stack([unit([0, 1, 0])]))
    assert [i for i, _ in again.query("ua", unit([0, 1, 0]), 3)] == ["b"]
    again.close()


def test_k_larger_than_group(index):
    index.upsert("ua", ["a", "b"], np.stack([unit([1, 0, 0]), unit([0, 1, 0])]))
    assert len(index.query("ua", unit([1, 1, 0]), 50)) == 2


def test_chroma_persists_and_refresh_sees_other_writers(tmp_path):
    first = ChromaIndex(tmp_path / "v")
    first.upsert("ua", ["a"], np.stack([unit([1, 0, 0])]))
    assert first.count("ua") == 1
    first.query("ua", unit([1, 0, 0]), 1)  # load the graph into this client's cache
    second = ChromaIndex(tmp_path / "v")
    second.upsert("ua", ["b"], np.stack([unit([0, 1, 0])]))
    first.refresh()
    assert {i for i, _ in first.query("ua", unit([0, 1, 0]), 5)} == {"a", "b"}
    assert first.user_keys() == {"ua"}


def test_chroma_memory_copy_follows_writes_and_ranks_as_hnsw(tmp_path, monkeypatch):
    """Small groups are searched exactly in process memory: the copy follows the upserts, overwrites and deletes
    made after it was loaded, and ranks as chroma's own index does (the same group searched with the copy off)."""
    from memory_store.vectors import chroma

    vecs = np.random.default_rng(3).standard_normal((60, 8)).astype(np.float32)
    ids = [f"m{i}" for i in range(60)]
    idx = ChromaIndex(tmp_path / "v")
    idx.upsert("ua", ids[:40], vecs[:40])
    q = vecs[50]
    idx.query("ua", q, 5)  # loads the copy
    idx.upsert("ua", ids[40:], vecs[40:])
    idx.upsert("ua", ["m0"], vecs[50:51])  # m0 now points where the query does
    idx.delete("ua", ["m50"])
    hot = idx.query("ua", q, 5)
    assert hot[0][0] == "m0" and "m50" not in [i for i, _ in hot]
    monkeypatch.setattr(chroma, "HOT_GROUP_LIMIT", 0)
    cold = ChromaIndex(tmp_path / "v")
    via_hnsw = cold.query("ua", q, 5)
    assert [i for i, _ in hot] == [i for i, _ in via_hnsw]
    assert [s for _, s in hot] == pytest.approx([s for _, s in via_hnsw], abs=1e-4)
    idx.close()
    cold.close()
