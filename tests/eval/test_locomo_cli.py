"""``mark eval locomo`` in a subprocess: a retrieval-only run on conv-30 needs no LLM and writes evidence
recall per category; malformed files exit 2 with one line naming the file and the problem."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.eval.cli_runs import mark

CONV30 = Path(__file__).parent / "data" / "locomo" / "conv-30.json"


def test_retrieval_only_conv30_writes_recall_per_category(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = mark(
        "eval",
        "locomo",
        "--data",
        str(CONV30),
        "--methods",
        "rag,mark",
        "--retrieval-only",
        "--budget-tokens",
        "2000",
        "--out",
        str(out),
        "--no-progress",
        home=tmp_path / "h",
    )
    assert proc.returncode == 0, proc.stderr
    assert "skipped with --retrieval-only" in proc.stdout
    rows = {(r["method"], r["category"]): r for r in csv.DictReader((out / "summary.csv").open())}
    assert set(rows) == {("rag", c) for c in ("overall_1_4", "multi_hop", "temporal", "single_hop", "adversarial")}
    for row in rows.values():
        assert 0.0 < float(row["evidence_recall_percent"]) <= 100.0
        assert row["j_percent"] == "" and row["total_processed"] == "0"
        assert float(row["avg_input_tokens"]) <= 2000
    assert rows[("rag", "overall_1_4")]["questions"] == "81"
    assert (out / "locomo.png").exists() and (out / "results.jsonl").exists()
    assert "Mem0" in proc.stdout and "gpt-4o-mini" in proc.stdout  # the published figures beside ours


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "malformed JSON"),
        ('{"speaker_a": "Jon", "speaker_b": "Gina", "qa": []}', "no sessions"),
        ('{"hello": 1}', "not a LoCoMo dialogue"),
        ("[]", "empty list"),
    ],
)
def test_malformed_file_exits_2_with_one_line(tmp_path: Path, content: str, needle: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    out = tmp_path / "out"
    proc = mark("eval", "locomo", "--data", str(bad), "--retrieval-only", "--out", str(out), home=tmp_path / "h")
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in proc.stderr
    assert str(bad) in lines[0] and needle in lines[0]
    assert not out.exists()


def test_bad_question_and_options_exit_2(tmp_path: Path) -> None:
    raw = json.loads(CONV30.read_text())
    raw["qa"][3]["category"] = "six"
    bad = tmp_path / "conv.json"
    bad.write_text(json.dumps(raw))
    proc = mark("eval", "locomo", "--data", str(bad), "--retrieval-only", home=tmp_path / "h")
    assert proc.returncode == 2 and "qa[3]: category 'six' is not one of 1-5" in proc.stderr
    proc = mark("eval", "locomo", "--data", str(CONV30), "--category", "gossip", home=tmp_path / "h")
    assert proc.returncode == 2 and "unknown LoCoMo category" in proc.stderr
