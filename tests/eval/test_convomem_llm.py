"""End to end with the real local model: a tiny ``--sample`` run through the real CLI (marked ``llm``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.eval.cli_runs import mark_with_local_model


@pytest.mark.llm
def test_sample_run_end_to_end_with_the_local_model(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = mark_with_local_model(
        request,
        tmp_path,
        "eval",
        "convomem",
        "--sample",
        "--sizes",
        "1,2",
        "--methods",
        "full_context,rag",
        "--category",
        "user_facts,abstention,changing",
        "--judge",
        "llm",
        "--leniency-check",
        "--concurrency",
        "2",
        "--out",
        str(out),
        "--no-progress",
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 12  # (2 user-facts items at 1-2 sizes + abstention x2 + changing x1) x 2 methods
    assert all(r["error"] is None for r in rows), [r["error"] for r in rows if r["error"]]
    assert all(r["answer"] and r["usage"]["prompt_tokens"] > 0 and r["latency_ms"] > 0 for r in rows)
    assert all(r["judge"].startswith("llm") for r in rows if r["correct"] is not None)
    assert sum(r["correct"] is not None for r in rows) >= 10  # the judge's reply was parseable
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert {r["method"] for r in summary} == {"full_context", "rag"}
    assert (out / "accuracy.png").exists() and (out / "input_tokens.png").exists()
    leniency = json.loads((out / "judge_leniency.json").read_text())
    # every selected question, including the 3-evidence changing item that needs size 3 (not asked here)
    assert leniency["total"] == 5 and "false-accept rate" in proc.stdout
    print(proc.stdout[-1500:])


@pytest.mark.llm
def test_mark_method_end_to_end_with_the_local_model(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = mark_with_local_model(
        request, tmp_path, "eval", "convomem", "--sample", "--sizes", "1", "--methods", "mark", "--category",
        "user_facts", "--judge", "exact", "--out", str(out), "--no-progress", timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    [row] = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert row["error"] is None and row["answer"]
    assert row["index_tokens"] > 0 and row["route"].startswith("mark:")
    assert (out / "mark-home").is_dir() and not (tmp_path / "home" / "memory.db").exists()
