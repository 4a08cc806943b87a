"""`mark bench store` at a small size, every engine and every peer in one run: the figures are produced and
consistent, the ratios computed and the plot written (a bench is a command: nothing here is timed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def mark(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mark_cli.main", "--home", str(home), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=600,
    )


@pytest.mark.postgres
def test_bench_store_runs_every_engine_and_peer_on_the_same_data(tmp_path, pg_url):
    plot = tmp_path / "store.png"
    args = ["bench", "store", "--memories", "60", "--users", "3", "--queries", "12", "--batch", "25"]
    r = mark(
        tmp_path / "home", *args, "--backend", "all", "--url", pg_url, "--compare", "all", "--plot", str(plot), "--json"
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["memories"] == 60 and out["users"] == 3 and out["embed_per_second"] > 0
    assert set(out["engines"]) == {"chroma", "exact", "postgres"}
    for name, e in out["engines"].items():
        assert e["check_ok"] is True, name
        assert e["add_per_second"] > 0 and e["add_share_of_embedding_rate"] > 0 and e["embed_alone_per_second"] > 0
        own_s = e["add_store_own_ms_per_1000"] * 60 / 1e6  # the add's time outside the embedding model
        assert 0 < own_s < e["add_seconds"], name
        assert 0 < e["add_share_by_store_own_time"] < 1, name
        assert 0 < e["search_p50_ms_without_embedding"] <= e["search_p95_ms_without_embedding"]
        assert e["first_search_per_user_p50_ms"] > 0  # each user's first search is timed apart
    assert out["engines"]["postgres"]["engine"] == "postgres" and out["engines"]["exact"]["engine"] == "sqlite"
    assert set(out["compare"]) == {"langgraph", "chroma"}
    for peer in out["compare"].values():
        assert peer["load_per_second_vectors_given"] > 0
        assert 0 < peer["search_p50_ms_without_embedding"] <= peer["search_p95_ms_without_embedding"]
    base = out["engines"]["chroma"]["search_p95_ms_without_embedding"]
    ratio = out["ratios"]["langgraph / mark chroma (p95)"]
    assert ratio == pytest.approx(out["compare"]["langgraph"]["search_p95_ms_without_embedding"] / base)
    assert {"mark postgres / mark chroma (p95)", "chroma / mark chroma (p50)"} <= set(out["ratios"])
    assert out["peak_rss_mb"] > 0
    assert out["plot"] == str(plot) and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_store_refuses_an_unknown_peer_with_exit_2(tmp_path):
    r = mark(tmp_path / "home", "bench", "store", "--memories", "10", "--compare", "mem1")
    assert r.returncode == 2
    assert "unknown mem1" in r.stderr + r.stdout and "Traceback" not in r.stderr


# --- the mem0 peer (opt-in: `--compare mem0`, never part of `all`) ---------------------------------------------


def test_bench_store_compares_mem0_when_named_and_its_searches_stay_in_the_user(tmp_path, monkeypatch):
    """A real, small run of mem0 (mem0ai on chroma, add with infer=False, no LLM, no network), then its kept store
    reopened through mem0's own API: every memory is its user's, and a search scoped to one user never returns
    another user's memory, even with that memory's own vector as the query."""
    pytest.importorskip("mem0", reason="the mem0 extra (mem0ai) is not installed")
    from memory_store import bench_compare, mem0_peer

    assert "mem0" not in bench_compare.PEERS and "mem0" in bench_compare.KNOWN, "--compare all stays the fast two"
    keep, plot = tmp_path / "keep", tmp_path / "store.png"
    args = ["bench", "store", "--memories", "40", "--users", "2", "--queries", "8", "--batch", "20"]
    r = mark(tmp_path / "home", *args, "--compare", "mem0", "--keep", str(keep), "--plot", str(plot), "--json")
    assert r.returncode == 0, r.stderr
    assert "keyword search" not in r.stderr, "mem0's warning about chroma is documented, not printed"
    out = json.loads(r.stdout)
    assert set(out["compare"]) == {"mem0"}
    peer = out["compare"]["mem0"]
    assert peer["what"].startswith("mem0")
    assert peer["load_seconds"] > 0 and peer["load_per_second_vectors_given"] > 0
    assert peer["load_per_second_vectors_given"] == pytest.approx(40 / peer["load_seconds"])
    assert 0 < peer["search_p50_ms_without_embedding"] <= peer["search_p95_ms_without_embedding"]
    assert {"mem0 / mark chroma (p50)", "mem0 / mark chroma (p95)"} <= set(out["ratios"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    monkeypatch.delenv("MEM0_DIR", raising=False)  # import_mem0 sets it: restored after the test
    monkeypatch.delenv("MEM0_TELEMETRY", raising=False)
    query: list[list[float]] = []
    memory = mem0_peer.open_memory(keep / "peer-mem0", lambda texts: query * len(texts))
    users = ["bench-user-0", "bench-user-1"]
    ids = {u: {m["id"] for m in memory.get_all(filters={"user_id": u}, top_k=100)["results"]} for u in users}
    assert len(ids[users[0]]) == len(ids[users[1]]) == 20 and not ids[users[0]] & ids[users[1]]
    stored = memory.vector_store.collection.get(include=["embeddings", "metadatas"])
    vector = {i: list(e) for i, e in zip(stored["ids"], stored["embeddings"], strict=True)}
    for owner, other in (users, users[::-1]):
        for mid in sorted(ids[owner])[:5]:
            query[:] = [vector[mid]]
            own = memory.search("a query", filters={"user_id": owner}, top_k=10, threshold=0.0)["results"]
            assert own and own[0]["id"] == mid, "the memory's own vector finds it first in its user's scope"
            found = memory.search("a query", filters={"user_id": other}, top_k=10, threshold=0.0)["results"]
            assert found and {m["id"] for m in found} <= ids[other], f"a search for {other} returned {owner}'s memory"
            assert all(m["user_id"] == other for m in found)
    assert memory.llm.calls == 0
    memory.db.close()


def test_mem0_runs_without_network_or_llm(tmp_path, monkeypatch):
    """The peer in process on random vectors with every outgoing connection refused and recorded: none is tried
    (telemetry, notices, an LLM or an embedding API would all connect), and the LLM that refuses is never called."""
    pytest.importorskip("mem0", reason="the mem0 extra (mem0ai) is not installed")
    import socket

    import numpy as np

    from memory_store import bench_compare

    monkeypatch.delenv("MEM0_DIR", raising=False)
    monkeypatch.delenv("MEM0_TELEMETRY", raising=False)
    tried: list[object] = []

    def refuse(self, address, *args):
        tried.append(address)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(30, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [f"memory number {i}" for i in range(30)]
    users = [f"u{i % 3}" for i in range(30)]
    queries = [(f"query {i}", f"u{i % 3}", vectors[i] + 0.01) for i in range(6)]
    result = bench_compare.run_alone("mem0", tmp_path, texts, users, vectors, queries, batch=10)
    assert result["load_per_second_vectors_given"] > 0
    assert 0 < result["search_p50_ms_without_embedding"] <= result["search_p95_ms_without_embedding"]
    assert tried == [], f"mem0 tried to connect to {tried}"


def test_mem0_telemetry_is_off_after_the_import(tmp_path, monkeypatch):
    pytest.importorskip("mem0", reason="the mem0 extra (mem0ai) is not installed")
    import sys

    from memory_store import mem0_peer

    monkeypatch.delenv("MEM0_DIR", raising=False)
    monkeypatch.delenv("MEM0_TELEMETRY", raising=False)
    mem0_peer.import_mem0(tmp_path / "mem0-home")
    telemetry = sys.modules["mem0.memory.telemetry"]
    assert telemetry.MEM0_TELEMETRY is False and sys.modules["mem0.memory.main"].MEM0_TELEMETRY is False
    assert telemetry.client_telemetry.posthog is None and telemetry._get_oss_telemetry() is None
    spacy_models = sys.modules["mem0.utils.spacy_models"]
    assert spacy_models._load_failed_full and spacy_models._load_failed_lemma, "no spaCy model download"
    assert os.environ["MEM0_TELEMETRY"] == "False"


def test_bench_store_without_mem0_is_one_line_and_exit_2(tmp_path):
    """mem0ai absent (hidden from this process): refused before the bench starts, like a missing pysqlite3."""
    code = "import sys; sys.modules['mem0'] = None; from mark_cli.main import main; sys.exit(main())"
    argv = ["--home", str(tmp_path / "home"), "bench", "store", "--memories", "10", "--compare", "all,mem0"]
    r = subprocess.run(
        [sys.executable, "-c", code, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=300,
    )
    assert r.returncode == 2, r.stderr
    from memory_store.bench_compare import MEM0_MISSING

    assert r.stderr.strip() == f"error: {MEM0_MISSING}" and "\n" not in MEM0_MISSING
    assert "pip install 'mark-memory[mem0]'" in MEM0_MISSING
    assert "Traceback" not in r.stderr and "adding" not in r.stdout


def test_interleaved_latencies_give_every_query_to_every_system_in_blocks_in_a_rotating_order():
    import numpy as np

    from memory_store import bench_compare

    calls: list[tuple[str, str]] = []

    def system(name):
        return lambda q, u, v: calls.append((name, q))

    queries = [(f"q{i}", "u", np.zeros(2, dtype=np.float32)) for i in range(7)]
    lat = bench_compare.interleaved_latencies({n: system(n) for n in ("a", "b", "c")}, queries, block=3)
    assert {n: len(v) for n, v in lat.items()} == {"a": 7, "b": 7, "c": 7}
    assert all(ms >= 0 for v in lat.values() for ms in v)
    blocks = [["q0", "q1", "q2"], ["q3", "q4", "q5"], ["q6"]]
    expected = []
    for k, block in enumerate(blocks):
        for name in ("abc" * 2)[k % 3 : k % 3 + 3]:
            expected += [(name, q) for q in block]
    assert calls == expected, "each block goes to every system in turn, the first system rotating"
