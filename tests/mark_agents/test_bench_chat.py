"""`mark bench chat` on a small store: the figures are produced and consistent (not timed: a bench is a command).

(a) and (c) run on the bench's own scripted in-process LLM; (b) needs the model and is tested once with the
session's local server.
"""

from __future__ import annotations

import itertools
import json

import pytest
from typer.testing import CliRunner

from mark_agents.bench import CONVERSATION, run_chat_bench
from mark_cli.main import app


def test_bench_chat_json_and_plot_with_scripted_fake_llm(tmp_path, monkeypatch):
    monkeypatch.setenv("MARK_HOME", str(tmp_path / "home"))
    plot = tmp_path / "plots" / "tokens.png"
    keep = tmp_path / "bench-store"
    args = ["--home", str(tmp_path / "home"), "bench", "chat", "--memories", "300", "--history-turns", "200"]
    args += ["--queries", "8"]
    args += ["--turns", "14", "--session-turns", "5", "--no-llm", "--keep", str(keep), "--plot", str(plot), "--json"]
    r = CliRunner().invoke(app, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)

    o = result["overhead"]
    assert o["memories"] == 300 and o["turns"] == 8 and "LLM time excluded" in o["llm"]
    assert o["history_turns"] >= 200  # the earlier turns, plus the timed chat turns themselves
    assert 0 < o["memory_ms"]["p50_ms"] <= o["memory_ms"]["p95_ms"] <= o["memory_ms"]["max_ms"]
    assert o["memories_per_turn_mean"] > 0 and o["memory_block_tokens_mean"] > 0
    assert result["extraction"] is None

    t = result["tokens"]
    assert t["turns"] == 14 and t["sessions"] == 3
    assert all(len(t[k]) == 14 for k in ("memory", "baseline", "full_history", "memory_block"))
    full = t["full_history"]
    assert all(a < b for a, b in itertools.pairwise(full))  # the full history only grows
    assert all(m >= b for m, b in zip(t["memory"], t["baseline"], strict=True))  # memory adds a block, nothing else
    assert t["memory"][0] == t["baseline"][0] == full[0]  # nothing to remember or resend yet
    assert t["baseline"][5] < t["baseline"][4]  # a new session starts with an empty window
    asked = [s for s in CONVERSATION[:14] if s.needs]
    assert t["questions"] == len(asked) and t["questions_with_fact_recalled"] == len(asked)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and result["plot"] == str(plot)

    # --keep reuses the built store: no memory is added the second time.
    r = CliRunner().invoke(app, [*args[:-1]], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "(a) memory overhead per turn" in r.stdout and "skipped (--no-llm)" in r.stdout


@pytest.mark.llm
def test_bench_chat_extraction_with_the_local_model(llm_settings):
    result = run_chat_bench(
        llm_settings, memories=20, history_turns=20, queries=2, turns=2, exchanges=1, progress=False
    )
    e = result["extraction"]
    assert e["errors"] == [] and e["exchanges"] == 1
    assert e["exchanges_per_min"] > 0 and e["prompt_tokens_per_extraction"] > 100
    assert e["llm_calls_per_exchange"] >= 1 and not e["server_started_for_bench"]
