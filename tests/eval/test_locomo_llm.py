"""End to end with the real local model: rag answers three conv-30 questions and the J judge grades them
through the real CLI (marked ``llm``). The small local model's verdicts are not checked, only that they exist."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.eval.cli_runs import mark_with_local_model

CONV30 = Path(__file__).parent / "data" / "locomo" / "conv-30.json"


@pytest.mark.llm
def test_locomo_rag_with_j_judge_and_leniency_check_local_model(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = mark_with_local_model(
        request, tmp_path, "eval", "locomo", "--data", str(CONV30), "--methods", "rag", "--category", "2,4,5",
        "--limit", "1", "--leniency-check", "--out", str(out), "--no-progress", timeout=1200,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["category"] for r in rows] == ["temporal", "single_hop", "adversarial"]
    # the budget bounds our token estimate; the server counts with the model's tokenizer (a few tokens apart)
    assert all(r["error"] is None and r["answer"] and 0 < r["usage"]["prompt_tokens"] <= 2200 for r in rows)
    assert all(r["correct"] is not None and r["judge"].startswith("j") for r in rows)  # the label was parsed
    assert "f1" in rows[0]["metrics"] and rows[2]["metrics"] == {}
    summary = {r["category"]: r for r in csv.DictReader((out / "summary.csv").open())}
    assert summary["overall_1_4"]["total_processed"] == "2" and summary["adversarial"]["total_processed"] == "1"
    assert (out / "locomo.png").exists()
    leniency = json.loads((out / "judge_leniency.json").read_text())
    assert leniency["total"] == 2  # each other's gold answer; conv-30's first trap is "Not mentioned", left out
    print(proc.stdout[-1500:])
