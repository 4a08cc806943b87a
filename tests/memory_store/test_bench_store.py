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
        assert e["add_per_second"] > 0 and e["add_share_of_embedding_rate"] > 0
        assert 0 < e["search_p50_ms_without_embedding"] <= e["search_p95_ms_without_embedding"]
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
