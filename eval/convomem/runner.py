"""Running a benchmark: every (question x size x method) not yet in ``results.jsonl``, K at a time.

The results file is the resume point: a killed run is started again with the same command and only the
missing keys are asked. ``run.json`` records what makes keys comparable (seed, mixing, budget, ...); a rerun
with different values into the same directory is refused rather than silently mixed.

``ask_all`` is the loop every benchmark shares (ConvoMem here, LoCoMo in ``mark_eval.locomo``); each then
summarises and plots its own way.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mark_agents.llm import Usage
from mark_eval.common import print_skipped_methods
from mark_eval.convomem.answerers import Answer, Answerer, AnswererContext, create, needs_llm_to_select
from mark_eval.convomem.judge import Judge
from mark_eval.convomem.plots import write_plots
from mark_eval.convomem.recall import evidence_in_prompt, evidence_recall
from mark_eval.convomem.results import Answered, ResultRow, ResultsFile
from mark_eval.convomem.schema import Question, TestCase
from mark_eval.convomem.summary import SummaryRow, print_table, summarise, write_summary_csv
from memory_store.atomic import write_text_atomic
from memory_store.errors import InvalidInput

S = TypeVar("S")  # a summary row: ConvoMem's or LoCoMo's


class CaseMeta(Protocol):
    """What planning a test case needs: its size, its questions and how often each was asked before."""

    context_size: int
    questions: list[Question]

    def repeat(self, qid: str) -> int: ...


class CaseSource(Protocol):
    """Test cases that may be too many to hold at once (streamed shards): ``metas`` for planning, then
    ``all_cases`` in the same order, one at a time."""

    def metas(self) -> Iterable[CaseMeta]: ...

    def all_cases(self) -> Iterable[TestCase]: ...


class _ListSource:
    def __init__(self, cases: list[TestCase]) -> None:
        self._cases = cases

    def metas(self) -> Iterable[CaseMeta]:
        return self._cases

    def all_cases(self) -> Iterable[TestCase]:
        return self._cases


def as_source(cases: list[TestCase] | CaseSource) -> CaseSource:
    return _ListSource(cases) if isinstance(cases, list) else cases


class RunOptions(BaseModel):
    methods: list[str]
    out_dir: Path
    concurrency: int = Field(default=1, ge=1)
    retrieval_only: bool = False
    #: recorded in run.json: a resumed run must match these
    fingerprint: dict[str, Any] = Field(default_factory=dict)
    progress: bool = True
    #: the progress bar's label
    label: str = "convomem"


#: Extra per-row metrics computed from the question and the answer (LoCoMo's token F1 and BLEU-1).
Scorer = Callable[[Question, str], dict[str, float]]


class Asked(BaseModel):
    """What :func:`ask_all` did: rows asked now, rows already in the results file, methods left out."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    asked: int
    skipped_done: int
    skipped_methods: list[str]
    results: ResultsFile


class RunReport(BaseModel):
    asked: int
    skipped_done: int
    skipped_methods: list[str]
    summary: list[SummaryRow]
    plots: list[Path]
    results_path: Path
    summary_path: Path


def check_fingerprint(out_dir: Path, fingerprint: dict[str, Any]) -> None:
    """Refuse to append to results made with other settings (their keys would mean other haystacks)."""
    path = out_dir / "run.json"
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8")).get("fingerprint", {})
    except (OSError, json.JSONDecodeError):
        return
    diffs = [f"{k}: {old[k]!r} there, {v!r} now" for k, v in fingerprint.items() if k in old and old[k] != v]
    if diffs:
        raise InvalidInput(f"{out_dir} holds results made with other settings ({'; '.join(diffs)}); use another --out")


def _write_run_json(out_dir: Path, options: RunOptions, prompt_version: str) -> None:
    payload = {"fingerprint": options.fingerprint, "methods": options.methods, "prompt_version": prompt_version}
    write_text_atomic(out_dir / "run.json", json.dumps(payload, indent=2, default=str) + "\n")


def _row(
    case: TestCase,
    q: Question,
    method: str,
    ans: Answer,
    verdict: Any,
    retrieval_only: bool,
    prompt_version: str,
    metrics: dict[str, float],
) -> ResultRow:
    evidence = case.evidence_mids.get(q.qid, [])
    measured = ans.model_dump(include=set(Answered.model_fields))
    measured.update(latency_ms=round(ans.latency_ms, 2), retrieval_ms=round(ans.retrieval_ms, 2))
    return ResultRow(
        **measured,
        qid=q.qid,
        context_size=case.context_size,
        method=method,
        repeat=case.repeat(q.qid),
        category=q.category,
        evidence_count=q.evidence_count,
        question=q.question,
        gold=q.answer,
        answer=ans.text,
        correct=None if verdict is None else verdict.correct,
        judge="none" if verdict is None else verdict.judge,
        approximate=False if verdict is None else verdict.approximate,
        judge_tokens=0 if verdict is None else verdict.usage.total_tokens,
        evidence_mids=evidence,
        evidence_in_prompt=evidence_in_prompt(evidence, ans.context_mids),
        evidence_recall=evidence_recall(evidence, ans.context_mids),
        n_conversations=len(case.haystack),
        haystack_id=case.haystack.hid,
        retrieval_only=retrieval_only,
        prompt_version=prompt_version,
        metrics=metrics,
    )


async def _select_only(answerer: Answerer, case: TestCase, question: str) -> Answer:
    started = time.perf_counter()
    sel = await answerer.select(case.haystack, question)
    return Answer(
        context_mids=[] if sel.refused else sel.context_mids,
        usage=Usage(prompt_tokens=sel.input_tokens, estimated=True),
        retrieval_ms=sel.retrieval_ms,
        latency_ms=(time.perf_counter() - started) * 1000.0,
        context_overflow=sel.context_overflow,
        route=sel.route,
        index_tokens=sel.index_usage.total_tokens,
    )


async def ask_all(
    cases: list[TestCase] | CaseSource,
    options: RunOptions,
    ctx: AnswererContext,
    judge: Judge | None,
    console: Console | None = None,
    on_row: Callable[[ResultRow], None] | None = None,
    scorer: Scorer | None = None,
) -> Asked:
    """Ask every (question, method) of every case not yet in ``results.jsonl``; append a row for each."""
    console = console or Console(stderr=True)
    out = options.out_dir
    out.mkdir(parents=True, exist_ok=True)
    prompt_version = ctx.prompts.version
    _write_run_json(out, options, prompt_version)
    results = ResultsFile(out / "results.jsonl")
    done = results.completed()
    methods = list(options.methods)
    skipped_methods: list[str] = []
    if options.retrieval_only:
        skipped_methods = [m for m in methods if needs_llm_to_select(m, ctx)]
        methods = [m for m in methods if m not in skipped_methods]
    answerers = {m: create(m, ctx) for m in methods}

    source = as_source(cases)

    def pending(meta: CaseMeta, method: str) -> list[Question]:
        return [q for q in meta.questions if (q.qid, meta.context_size, method, meta.repeat(q.qid)) not in done]

    total = already = 0
    for meta in source.metas():  # sizes and questions only: no conversation is read here
        for m in methods:
            todo = len(pending(meta, m))
            total += todo
            already += len(meta.questions) - todo

    semaphore = asyncio.Semaphore(options.concurrency)
    groups = asyncio.Semaphore(max(2, options.concurrency))
    write_lock = asyncio.Lock()
    progress = Progress(
        TextColumn(f"[bold]{options.label}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
        disable=not options.progress,
        transient=False,
    )
    task_id = progress.add_task("", total=total)

    async def ask(case: TestCase, method: str, q: Question) -> None:
        answerer = answerers[method]
        async with semaphore:
            if options.retrieval_only:
                ans = await _select_only(answerer, case, q.question)
                verdict = None
            else:
                ans = await answerer.answer(case.haystack, q.question)
                asked = ans.error is None and not ans.context_overflow
                verdict = await judge.judge(q, ans.text) if (judge is not None and asked) else None
        scored = scorer is not None and ans.error is None and not ans.context_overflow and not options.retrieval_only
        metrics = scorer(q, ans.text) if scored else {}
        row = _row(case, q, method, ans, verdict, options.retrieval_only, prompt_version, metrics)
        async with write_lock:
            results.append(row)
        if on_row is not None:
            on_row(row)
        progress.update(task_id, advance=1, description=f"{method} @ {case.context_size}")

    failed: list[BaseException] = []

    async def run_group(case: TestCase, method: str, questions: list[Question]) -> None:
        try:
            await answerers[method].prepare(case.haystack)
            await asyncio.gather(*(ask(case, method, q) for q in questions))
        except BaseException as exc:
            failed.append(exc)
            raise
        finally:
            answerers[method].release(case.haystack)
            groups.release()

    async def produce() -> None:
        """Test cases are read (streamed shards: parsed) one at a time, and only while fewer than ``groups``
        haystacks are in flight: memory holds a few haystacks, never the whole benchmark."""
        tasks: list[asyncio.Future[None]] = []
        iterator = iter(source.all_cases())
        try:
            while not failed:
                case = await asyncio.to_thread(next, iterator, None)
                if case is None:
                    break
                for m in methods:
                    todo = pending(case, m)
                    if not todo or failed:
                        continue
                    await groups.acquire()
                    tasks.append(asyncio.ensure_future(run_group(case, m, todo)))
        finally:
            await asyncio.gather(*tasks, return_exceptions=True)
        if failed:
            raise failed[0]

    try:
        with progress:
            await produce()
    finally:
        for answerer in answerers.values():
            await answerer.aclose()
    return Asked(asked=total, skipped_done=already, skipped_methods=skipped_methods, results=results)


async def run_benchmark(
    cases: list[TestCase] | CaseSource,
    options: RunOptions,
    ctx: AnswererContext,
    judge: Judge | None,
    console: Console | None = None,
    on_row: Callable[[ResultRow], None] | None = None,
) -> RunReport:
    """ConvoMem: ask everything, then ConvoMem's summary (per size) and plots."""
    asked = await ask_all(cases, options, ctx, judge, console, on_row)
    summary, fields = write_summary(asked, options.out_dir, summarise, write_summary_csv)
    return RunReport(summary=summary, plots=write_plots(summary, options.out_dir), **fields)


def write_summary(
    asked: Asked,
    out_dir: Path,
    summarise: Callable[[Iterable[ResultRow]], list[S]],
    write_csv: Callable[[Path, list[S]], None],
) -> tuple[list[S], dict[str, Any]]:
    """Summarise every row of the results file into ``summary.csv``; also the report fields both evaluators'
    reports share (counts and paths)."""
    summary = summarise(asked.results.load().values())
    summary_path = out_dir / "summary.csv"
    write_csv(summary_path, summary)
    fields = {
        "asked": asked.asked,
        "skipped_done": asked.skipped_done,
        "skipped_methods": asked.skipped_methods,
        "results_path": asked.results.path,
        "summary_path": summary_path,
    }
    return summary, fields


def report_to_console(report: RunReport, console: Console | None = None) -> None:
    console = console or Console()
    print_table(report.summary, console)
    done = f"{report.asked} asked now, {report.skipped_done} already done"
    console.print(f"results: {escape(str(report.results_path))}  ({done})")
    console.print(f"summary: {escape(str(report.summary_path))}")
    for plot in report.plots:
        console.print(f"plot:    {escape(str(plot))}")
    overflowed = [r for r in report.summary if r.context_overflow]
    if overflowed:
        where = ", ".join(f"{r.method} {r.category} @ {r.context_size}: {r.context_overflow}" for r in overflowed)
        console.print(
            f"refused (history over the model's window, not in the accuracy): "
            f"{sum(r.context_overflow for r in overflowed)} questions ({escape(where)})"
        )
    print_skipped_methods(report.skipped_methods, console)
