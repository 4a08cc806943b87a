"""Runner and outputs: resume after a kill, results/summary/plots written, settings fingerprint."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mark_agents.llm import Usage
from mark_eval.convomem.answerers import AnswererContext
from mark_eval.convomem.judge import ExactJudge
from mark_eval.convomem.loaders import load_sample
from mark_eval.convomem.mixing import MixConfig, build_cases
from mark_eval.convomem.results import ResultRow, ResultsFile
from mark_eval.convomem.runner import RunOptions, check_fingerprint, run_benchmark
from mark_eval.convomem.summary import COLUMNS, CONVOMEM_COLUMNS, percentile, summarise, wilson_interval
from memory_store.errors import InvalidInput
from tests.eval import slow_run
from tests.eval.fakes import answering

ROOT = Path(__file__).parents[2]


def _keys(path: Path) -> list[tuple[str, int, str, int]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["qid"], r["context_size"], r["method"], r["repeat"]) for r in rows]


def test_resume_after_kill_has_no_duplicates_and_completes_with_a_scripted_llm(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "tests.eval.slow_run", str(out), "0.15"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if results.exists() and len(results.read_text().splitlines()) >= 6:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    partial = _keys(results)
    total = slow_run.expected_rows()
    assert 6 <= len(partial) < total, "the kill must land mid-run"
    done = subprocess.run([*cmd[:-1], "0"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"asked={total - len(set(partial))}" in done.stdout
    keys = _keys(results)
    assert len(keys) == len(set(keys)) == total
    assert (out / "summary.csv").exists() and (out / "accuracy.png").exists()


async def test_batched_re_asked_questions_get_a_row_each_with_a_scripted_llm(tmp_path: Path) -> None:
    cases = build_cases(load_sample(), MixConfig(sizes=(1,), min_cases=4)).cases
    repeated = {(q.qid, c.repeat(q.qid)) for c in cases for q in c.questions}
    assert any(r > 0 for _, r in repeated), "the sample has 3 items per category: some are asked again"
    _, llm = answering(lambda m: "I don't have any information about that.")
    options = RunOptions(methods=["full_context"], out_dir=tmp_path, progress=False)
    report = await run_benchmark(cases, options, AnswererContext(llm=llm), ExactJudge())
    rows = ResultsFile(tmp_path / "results.jsonl").load()
    assert report.asked == len(rows) == len(repeated)
    assert {(qid, rep) for qid, _, _, rep in rows} == repeated
    assert sum(s.questions for s in report.summary) == len(repeated)
    # at size 1 a re-asked item's haystack is its own conversation again: test cases count distinct haystacks
    assert all(1 <= s.total_test_cases <= 4 for s in report.summary)
    again = await run_benchmark(cases, options, AnswererContext(llm=llm), ExactJudge())
    assert again.asked == 0


async def test_run_writes_results_summary_and_plots_with_a_scripted_llm(tmp_path: Path) -> None:
    cases = build_cases(load_sample(), MixConfig(sizes=(1, 2), mode="standard")).cases
    _, llm = answering(lambda m: "I don't have any information about that.")
    ctx = AnswererContext(llm=llm, budget_tokens=900, retrieval="keyword")
    options = RunOptions(methods=["full_context", "rag_keyword"], out_dir=tmp_path, progress=False)
    report = await run_benchmark(cases, options, ctx, ExactJudge())
    rows = list(ResultsFile(tmp_path / "results.jsonl").load().values())
    assert len(rows) == report.asked == sum(len(c.questions) for c in cases) * 2
    row = rows[0]
    assert row.judge == "exact" and row.correct is not None and row.usage.prompt_tokens > 0
    assert row.evidence_recall is not None and row.prompt_version
    with (tmp_path / "summary.csv").open() as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == COLUMNS and reader.fieldnames[: len(CONVOMEM_COLUMNS)] == CONVOMEM_COLUMNS
        table = list(reader)
    abst = [r for r in table if r["category"] == "abstention" and r["method"] == "full_context"]
    assert abst and all(r["success_rate_percent"] == "100.0" for r in abst)
    facts = [r for r in table if r["category"] == "user_facts"]
    assert all(r["success_rate_percent"] == "0.0" for r in facts)
    for png in ("accuracy.png", "input_tokens.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temp files left behind"
    # a second run asks nothing new
    again = await run_benchmark(cases, options, ctx, ExactJudge())
    assert again.asked == 0 and again.skipped_done == report.asked


def test_results_file_tolerates_a_cut_last_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    row = ResultRow(
        qid="a", context_size=1, method="m", category="user_facts", evidence_count=1, question="q", gold="g"
    )
    results = ResultsFile(path)
    results.append(row)
    with path.open("a") as fh:
        fh.write('{"qid": "b", "context_si')
    assert list(results.load()) == [("a", 1, "m", 0)]
    results.append(row.model_copy(update={"qid": "c"}))
    assert set(results.load()) == {("a", 1, "m", 0), ("c", 1, "m", 0)}


def test_errors_are_retried_and_excluded_from_accuracy() -> None:
    base = dict(context_size=1, method="m", category="user_facts", evidence_count=1, question="q", gold="g")
    rows = [
        ResultRow(qid="a", correct=True, judge="exact", latency_ms=10, **base),
        ResultRow(qid="b", correct=False, judge="exact", latency_ms=30, **base),
        ResultRow(qid="c", error="LLMError: boom", **base),
    ]
    [s] = summarise(rows)
    assert s.success_rate_percent == 50.0 and s.total_processed == 2 and s.errors == 1 and s.questions == 3
    assert (s.ci95_low_percent, s.ci95_high_percent) == wilson_interval(1, 2)


def test_overflow_is_excluded_from_accuracy_and_counted_apart() -> None:
    base = dict(context_size=300, method="full_context", category="user_facts", evidence_count=1, question="q")
    rows = [
        ResultRow(
            qid="a", gold="g", correct=True, judge="exact", usage=Usage(prompt_tokens=100), haystack_id="h1", **base
        ),
        ResultRow(qid="b", gold="g", context_overflow=True, haystack_id="h1", **base),
        ResultRow(qid="c", gold="g", error="LLMError: boom", haystack_id="h2", **base),
        ResultRow(
            qid="d", gold="g", correct=False, judge="exact", usage=Usage(prompt_tokens=300), haystack_id="h3", **base
        ),
    ]
    [s] = summarise(rows)
    assert s.total_processed == 2 and s.correct_answers == 1 and s.success_rate_percent == 50.0
    assert s.context_overflow == 1 and s.errors == 1 and s.questions == 4
    assert (s.total_test_cases, s.test_cases_completed) == (3, 2)
    assert s.avg_input_tokens == 200.0
    assert s.avg_cached_tokens is None and s.cache_ratio_percent is None, "unknown is not zero"
    cached = [r.model_copy(update={"usage": r.usage.model_copy(update={"cached_tokens": 50})}) for r in rows]
    [c] = summarise(cached)
    assert c.avg_cached_tokens == 50.0 and c.cache_ratio_percent == 25.0


def test_rows_written_with_flat_token_fields_still_load() -> None:
    """A results file from before the usage was kept whole resumes: its flat fields become the usage."""
    old = {
        "qid": "a", "context_size": 1, "method": "rag", "category": "user_facts", "evidence_count": 1,
        "question": "q", "gold": "g", "input_tokens": 120, "output_tokens": 7, "cached_tokens": None,
        "helper_input_tokens": 40, "helper_output_tokens": 3, "cost_usd": 0.5, "calls": 2,
    }  # fmt: skip
    row = ResultRow.model_validate_json(json.dumps(old))
    assert (row.usage.prompt_tokens, row.usage.completion_tokens, row.usage.cached_tokens) == (120, 7, None)
    assert (row.helper_usage.prompt_tokens, row.helper_usage.completion_tokens) == (40, 3)
    assert row.total.cost_usd == 0.5 and row.total.calls == 2


def test_wilson_interval_known_values() -> None:
    assert wilson_interval(0, 10) == (0.0, 27.8)  # upper = z^2 / (n + z^2) = 3.84 / 13.84
    assert wilson_interval(5, 10) == (23.7, 76.3)
    assert wilson_interval(10, 10) == (72.2, 100.0)
    assert wilson_interval(81, 100) == (72.2, 87.5)
    assert wilson_interval(0, 0) is None


def test_percentile_is_convomem_nearest_rank() -> None:
    values = [float(v) for v in range(1, 11)]
    assert percentile(values, 50) == 5.0  # floor(0.5 * 9) = 4 -> 5th value
    assert percentile(values, 90) == 9.0
    assert percentile(values, 99) == 9.0
    assert percentile([], 50) == 0.0


def test_fingerprint_mismatch_is_refused(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps({"fingerprint": {"seed": 0, "budget_tokens": 4000}}))
    check_fingerprint(tmp_path, {"seed": 0, "budget_tokens": 4000})
    with pytest.raises(InvalidInput, match="seed"):
        check_fingerprint(tmp_path, {"seed": 1, "budget_tokens": 4000})


async def test_endpoint_down_stops_the_run_and_keeps_what_was_done_with_a_scripted_llm(tmp_path: Path) -> None:
    import httpx

    from mark_agents.llm import LLMUnavailable

    calls = {"n": 0}

    def flaky(messages: list[dict[str, str]]) -> str | Exception:
        calls["n"] += 1
        if calls["n"] > 3:
            return httpx.ConnectError("connection refused")
        return "I don't have any information about that."

    cases = build_cases(load_sample(), MixConfig(sizes=(1,))).cases
    ctx = AnswererContext(llm=answering(flaky)[1], retrieval="keyword")
    options = RunOptions(methods=["full_context"], out_dir=tmp_path, progress=False)
    with pytest.raises(LLMUnavailable):
        await run_benchmark(cases, options, ctx, ExactJudge())
    assert len(ResultsFile(tmp_path / "results.jsonl").load()) == 3


def test_public_api() -> None:
    import mark_eval.convomem as convomem

    for name in convomem.__all__:
        assert getattr(convomem, name) is not None
    assert convomem.DEFAULT_SIZES[-1] == 300


async def test_overflowing_sizes_are_reported_with_a_scripted_llm(tmp_path: Path) -> None:
    from rich.console import Console

    from mark_eval.convomem.runner import report_to_console
    from mark_eval.convomem.synthetic import synthetic_data

    data = synthetic_data(n_filler=12, n_items=1, n_messages=20)
    cases = build_cases(data, MixConfig(sizes=(1, 10), mode="standard")).cases
    fake, llm = answering(lambda m: "I don't have any information about that.", context_window=4096)
    options = RunOptions(methods=["full_context"], out_dir=tmp_path, progress=False)
    report = await run_benchmark(cases, options, AnswererContext(llm=llm), ExactJudge())
    by_size = {s.context_size: s for s in report.summary}
    assert by_size[10].context_overflow == 1 and by_size[10].total_processed == 0
    assert by_size[1].context_overflow == 0 and by_size[1].total_processed == 1
    assert fake.calls == 1, "only the size that fits is asked"
    console = Console(width=250, record=True)
    report_to_console(report, console)
    assert "refused (history over the model's window, not in the accuracy): 1 questions" in console.export_text()
