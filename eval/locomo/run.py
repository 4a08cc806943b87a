"""Running LoCoMo: the shared question loop (``convomem.runner.ask_all``) with LoCoMo's prompt profile, its
J judge and lexical scores, then LoCoMo's summary, table and plot."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel
from rich.console import Console

from mark_eval.common import print_skipped_methods
from mark_eval.convomem.answerers import AnswererContext
from mark_eval.convomem.judge import Judge
from mark_eval.convomem.results import ResultRow
from mark_eval.convomem.runner import RunOptions, ask_all, write_summary
from mark_eval.convomem.schema import Question, TestCase
from mark_eval.locomo.categories import ADVERSARIAL
from mark_eval.locomo.metrics import lexical_scores
from mark_eval.locomo.plots import write_plot
from mark_eval.locomo.summary import LocomoSummaryRow, print_tables, summarise, write_summary_csv


class LocomoReport(BaseModel):
    asked: int
    skipped_done: int
    skipped_methods: list[str]
    summary: list[LocomoSummaryRow]
    plot: Path | None
    results_path: Path
    summary_path: Path


def score(question: Question, answer: str) -> dict[str, float]:
    """Token F1 and BLEU-1 against the gold answer; none for adversarial questions (their gold answer is
    "not mentioned", which lexical overlap cannot grade)."""
    if question.category == ADVERSARIAL:
        return {}
    return lexical_scores(answer, question.answer)


async def run_locomo(
    cases: list[TestCase],
    options: RunOptions,
    ctx: AnswererContext,
    judge: Judge | None,
    console: Console | None = None,
    on_row: Callable[[ResultRow], None] | None = None,
) -> LocomoReport:
    asked = await ask_all(cases, options, ctx, judge, console, on_row, scorer=score)
    summary, fields = write_summary(asked, options.out_dir, summarise, write_summary_csv)
    return LocomoReport(summary=summary, plot=write_plot(summary, options.out_dir), **fields)


def report_to_console(report: LocomoReport, console: Console | None = None) -> None:
    console = console or Console()
    print_tables(report.summary, console)
    console.print(f"results: {report.results_path}  ({report.asked} asked now, {report.skipped_done} already done)")
    console.print(f"summary: {report.summary_path}")
    if report.plot is not None:
        console.print(f"plot:    {report.plot}")
    print_skipped_methods(report.skipped_methods, console)
