"""Aggregating results: ConvoMem's summary columns per (method, category, evidence count, size), the CSV
and the console table."""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mark_eval.convomem.results import ResultRow
from memory_store.atomic import write_text_atomic

#: ConvoMem's columns first (same names, order and meaning as the reference's CSV export), then ours.
CONVOMEM_COLUMNS = [
    "context_size",
    "success_rate_percent",
    "correct_answers",
    "total_processed",
    "test_cases_completed",
    "total_test_cases",
    "avg_response_time_ms",
    "avg_input_tokens",
    "avg_output_tokens",
    "avg_cost",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "avg_cached_tokens",
    "cache_ratio_percent",
]
EXTRA_COLUMNS = [
    "method",
    "category",
    "evidence_count",
    "ci95_low_percent",
    "ci95_high_percent",
    "evidence_recall_percent",
    "questions",
    "context_overflow",
    "errors",
    "approximate",
    "judge",
    "avg_retrieval_ms",
    "avg_index_tokens",
    "avg_helper_input_tokens",
    "avg_helper_output_tokens",
]
COLUMNS = CONVOMEM_COLUMNS + EXTRA_COLUMNS


class GroupStats(BaseModel):
    """What every benchmark reports for a group of result rows (ConvoMem's measures and ours)."""

    success_rate_percent: float | None
    #: 95% Wilson interval of the success rate (None when nothing was judged)
    ci95_low_percent: float | None
    ci95_high_percent: float | None
    correct_answers: int
    total_processed: int
    #: haystacks (test cases) with a row in the group, and those whose every row completed without an error
    test_cases_completed: int
    total_test_cases: int
    avg_response_time_ms: float
    avg_input_tokens: float
    avg_output_tokens: float
    avg_cost: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    #: None when no row reported cached tokens (unknown, not zero)
    avg_cached_tokens: float | None
    cache_ratio_percent: float | None
    evidence_recall_percent: float | None
    questions: int
    context_overflow: int
    errors: int
    approximate: bool
    judge: str
    avg_retrieval_ms: float
    avg_index_tokens: float
    avg_helper_input_tokens: float
    avg_helper_output_tokens: float


class SummaryRow(GroupStats):
    method: str
    category: str
    evidence_count: int
    context_size: int


def percentile(sorted_values: list[float], p: float) -> float:
    """ConvoMem's nearest rank: index floor(p/100 * (n-1)) of the sorted values."""
    if not sorted_values:
        return 0.0
    return sorted_values[math.floor(p / 100.0 * (len(sorted_values) - 1))]


def wilson_interval(correct: int, total: int, z: float = 1.959964) -> tuple[float, float] | None:
    """95% Wilson score interval of a binomial proportion, in percent: unlike the normal approximation it
    stays inside 0-100 and is honest at the small counts of one category or one size."""
    if total <= 0:
        return None
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return round(100 * max(0.0, centre - half), 1), round(100 * min(1.0, centre + half), 1)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def group_stats(group: list[ResultRow]) -> dict[str, Any]:
    """The :class:`GroupStats` fields of a group. Unjudged rows (answer or judge failures) are left out of
    ``total_processed``, as in ConvoMem; so are rows whose history overflowed the model's window (refused,
    counted in ``context_overflow``). Input and cached tokens are averaged over the rows that made a final
    answer call, as the reference averages only the calls that reported them."""
    no_error = [r for r in group if r.error is None]
    ok = [r for r in no_error if not r.context_overflow]
    judged = [r for r in ok if r.correct is not None]
    correct = sum(1 for r in judged if r.correct)
    latencies = sorted(r.latency_ms for r in ok)
    recalls = [r.evidence_recall for r in ok if r.evidence_recall is not None]
    called = [r for r in ok if not r.canned]
    cached = [r.usage.cached_tokens for r in called if r.usage.cached_tokens is not None]
    avg_in = mean([r.usage.prompt_tokens for r in called])
    avg_cached = mean([float(c) for c in cached]) if cached else None
    cache_ratio = None
    if avg_cached is not None:
        prompt = max(avg_in, avg_cached)
        cache_ratio = round(min(100.0 * avg_cached / prompt, 100.0), 1) if prompt > 0 else 0.0
    haystacks: dict[str, bool] = {}
    for r in group:
        haystacks[r.haystack_id] = haystacks.get(r.haystack_id, True) and r.error is None
    ci = wilson_interval(correct, len(judged))
    return {
        "success_rate_percent": round(100.0 * correct / len(judged), 1) if judged else None,
        "ci95_low_percent": ci[0] if ci else None,
        "ci95_high_percent": ci[1] if ci else None,
        "correct_answers": correct,
        "total_processed": len(judged),
        "test_cases_completed": sum(1 for done in haystacks.values() if done),
        "total_test_cases": len(haystacks),
        "avg_response_time_ms": round(mean(latencies), 1),
        "avg_input_tokens": round(avg_in, 1),
        "avg_output_tokens": round(mean([r.usage.completion_tokens for r in called]), 1),
        "avg_cost": round(mean([r.total.cost_usd for r in ok]), 6),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p90_ms": round(percentile(latencies, 90), 1),
        "p95_ms": round(percentile(latencies, 95), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "avg_cached_tokens": None if avg_cached is None else round(avg_cached, 1),
        "cache_ratio_percent": cache_ratio,
        "evidence_recall_percent": round(100.0 * mean(recalls), 1) if recalls else None,
        "questions": len(group),
        "context_overflow": sum(1 for r in no_error if r.context_overflow),
        "errors": len(group) - len(no_error),
        "approximate": any(r.approximate for r in judged),
        "judge": "+".join(sorted({r.judge for r in judged})),
        "avg_retrieval_ms": round(mean([r.retrieval_ms for r in ok]), 1),
        "avg_index_tokens": round(mean([r.index_tokens for r in ok]), 1),
        "avg_helper_input_tokens": round(mean([r.helper_usage.prompt_tokens for r in ok]), 1),
        "avg_helper_output_tokens": round(mean([r.helper_usage.completion_tokens for r in ok]), 1),
    }


def summarise(rows: Iterable[ResultRow]) -> list[SummaryRow]:
    groups: dict[tuple[str, str, int, int], list[ResultRow]] = defaultdict(list)
    for row in rows:
        groups[(row.method, row.category, row.evidence_count, row.context_size)].append(row)
    return [
        SummaryRow(method=method, category=category, evidence_count=ev, context_size=size, **group_stats(group))
        for (method, category, ev, size), group in sorted(groups.items())
    ]


def to_csv(summary: list[SummaryRow]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in summary:
        data = row.model_dump()
        writer.writerow({k: "" if data[k] is None else data[k] for k in COLUMNS})
    return buf.getvalue()


def write_summary_csv(path: Path, summary: list[SummaryRow]) -> None:
    write_text_atomic(path, to_csv(summary))


def judge_label(summary: list[SummaryRow]) -> str:
    """Which judge produced the verdicts of a summary, for every table title and plot: a reader must never take
    the keyword judge's figures for an LLM judge's."""
    names = sorted({part for r in summary for part in r.judge.split("+") if part})
    if not names:
        return "no verdicts (nothing judged)"
    shown = []
    for name in names:
        if name == "exact":
            shown.append("exact (deterministic keyword judge, no model)")
        elif name.startswith("llm"):
            model = name.split(":", 1)[1] if ":" in name else "?"
            shown.append(f"llm ({model})")
        else:
            shown.append(name)
    return "verdicts by " + " + ".join(shown)


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def console_table(summary: list[SummaryRow], title: str = "ConvoMem") -> Table:
    table = Table(title=f"{title}: {judge_label(summary)}", show_lines=False)
    for name, justify in [
        ("method", "left"),
        ("category", "left"),
        ("ev", "right"),
        ("convs", "right"),
        ("acc %", "right"),
        ("95% CI", "right"),
        ("n", "right"),
        ("recall %", "right"),
        ("in tok", "right"),
        ("out tok", "right"),
        ("p50 ms", "right"),
        ("overflow", "right"),
        ("err", "right"),
        ("judge", "left"),
    ]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in summary:
        acc = _fmt(r.success_rate_percent) + ("~" if r.approximate else "")
        ci = f"{r.ci95_low_percent:.0f}-{r.ci95_high_percent:.0f}" if r.ci95_low_percent is not None else "-"
        table.add_row(
            escape(r.method),
            escape(r.category),
            str(r.evidence_count),
            str(r.context_size),
            acc,
            ci,
            str(r.total_processed),
            _fmt(r.evidence_recall_percent),
            _fmt(r.avg_input_tokens, ".0f"),
            _fmt(r.avg_output_tokens, ".0f"),
            _fmt(r.p50_ms, ".0f"),
            str(r.context_overflow),
            str(r.errors),
            escape(r.judge or "-"),
        )
    table.caption = (
        "~ = approximate (deterministic rubric judge); recall = evidence messages that reached the prompt; "
        "overflow = questions refused because the history exceeds the model's window (not in acc %)"
    )
    return table


def print_table(summary: list[SummaryRow], console: Console | None = None, title: str = "ConvoMem") -> None:
    (console or Console()).print(console_table(summary, title))
