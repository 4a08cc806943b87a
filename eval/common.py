"""Steps that ``mark eval convomem`` and ``mark eval locomo`` share around a run, kept in one place so the
two commands take, check, run, close and report the same way."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from memory_store.errors import InvalidInput

if TYPE_CHECKING:
    from mark_agents.llm import LLMClient
    from mark_eval.config import EvalSettings
    from mark_eval.convomem.answerers import AnswererContext
    from mark_eval.convomem.judge import Judge, LeniencyReport
    from mark_eval.convomem.runner import RunOptions
    from mark_eval.convomem.schema import Question

R = TypeVar("R")

# -- the options both commands take, with the same help (each command sets its own default)
Concurrency = Annotated[int, typer.Option("--concurrency", min=1, help="Questions in flight.")]
BudgetTokens = Annotated[
    int, typer.Option("--budget-tokens", min=256, help="Input-token budget of an answer prompt for rag/hybrid/mark.")
]
Retrieval = Annotated[
    str, typer.Option("--retrieval", help="Retrieval of rag and of mark's episodes: dense, keyword or hybrid.")
]
MarkExtraction = Annotated[
    str,
    typer.Option(
        "--mark-extraction",
        help="mark's notes: llm (the MARK builder extracts notes first) or off (the stored turns only, no LLM).",
    ),
]
LeniencyCheck = Annotated[
    bool,
    typer.Option("--leniency-check", help="Also feed the judge known-wrong answers and report its false-accept rate."),
]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="No progress bar.")]


def choice(value: str, allowed: tuple[str, ...], option: str) -> str:
    """``value`` when it is one of ``allowed``, else the one-line error that names ``option``."""
    if value not in allowed:
        raise InvalidInput(f"{option} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def check_choices(retrieval: str, judge: str, judges: tuple[str, ...], mark_extraction: str) -> None:
    """Refuse a ``--retrieval``, ``--judge`` (one of the command's ``judges``) or ``--mark-extraction`` that the
    run does not know, in that order, before anything is written."""
    choice(retrieval, ("dense", "keyword", "hybrid"), "--retrieval")
    choice(judge, judges, "--judge")
    choice(mark_extraction, ("llm", "off"), "--mark-extraction")


@dataclass(frozen=True)
class AnswerSettings:
    """The answer and judge settings both commands take, read from here into the run's fingerprint and into the
    answerer context, so the two cannot drift apart (each command adds its own, e.g. ``--max-answer-tokens``)."""

    budget_tokens: int
    retrieval: str
    retrieval_only: bool
    #: the judge the run uses: llm, exact or none (``--judge`` once resolved; none with ``--retrieval-only``)
    judge: str
    mark_extraction: str

    def fingerprint(self) -> dict[str, Any]:
        """In the order ``run.json`` lists them: results made with other values must not share an output folder."""
        return {
            "budget_tokens": self.budget_tokens,
            "retrieval": self.retrieval,
            "retrieval_only": self.retrieval_only,
            "judge": self.judge,
            "mark_extraction": self.mark_extraction,
        }


def console_out() -> Console:
    """The console of reports: the terminal's width, else one wide enough for the tables in a file or a pipe."""
    console = Console()
    return console if console.is_terminal else Console(width=150)


def output_dir(out: Path | None, default: Path) -> Path:
    """``--out`` (or the default), refused before anything is written when it names a file."""
    out_dir = out or default
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInput(f"--out {out_dir} exists and is not a directory")
    return out_dir


def run_options(out_dir: Path, fingerprint: dict[str, Any], **options: Any) -> RunOptions:
    """The run's options, once ``out_dir`` is known to hold no results of other settings (``fingerprint``)."""
    from mark_eval.convomem.runner import RunOptions, check_fingerprint

    check_fingerprint(out_dir, fingerprint)
    return RunOptions(out_dir=out_dir, fingerprint=fingerprint, **options)


def answerer_context(config: EvalSettings, client: Any, out_dir: Path, **options: Any) -> AnswererContext:
    """What the methods of a CLI run may use: the answering client, the configured embedder and settings, and
    ``out_dir`` as the working directory (the ``mark`` method's home)."""
    from mark_eval.config import embedder_factory
    from mark_eval.convomem.answerers import AnswererContext

    return AnswererContext(
        llm=client,
        embedder_factory=embedder_factory(config.store),
        settings=config.settings,
        work_dir=out_dir.resolve(),
        **options,
    )


async def connect_clients(
    config: EvalSettings, judge_kind: str, need_answerer: bool
) -> tuple[LLMClient | None, LLMClient | None]:
    """The answering client and the judge's (``connect_judge``: the configured judge, else the same model)."""
    from mark_eval.config import connect_answerer, connect_judge

    client = await connect_answerer(config) if need_answerer else None
    judge_client = await connect_judge(config) if judge_kind == "llm" else None
    return client, judge_client


async def run_then_check_judge(
    run: Awaitable[R],
    judge: Judge | None,
    check: bool,
    questions: Callable[[], list[Question]],
    wrong_answers: Callable[[list[Question]], list[tuple[Question, str]]] | None = None,
) -> tuple[R, LeniencyReport | None]:
    """The run's report, then, with ``--leniency-check`` and a judge, how often that judge accepts known-wrong
    answers to ``questions`` (``wrong_answers``: the benchmark's own, else ConvoMem's)."""
    report = await run
    if not check or judge is None:
        return report, None
    from mark_eval.convomem.judge import leniency_check

    if wrong_answers is None:
        return report, await leniency_check(judge, questions())
    return report, await leniency_check(judge, questions(), wrong_answers=wrong_answers)


async def close_clients(*clients: Any) -> None:
    """Close each distinct client once (the judge is often the answering client itself)."""
    for c in {id(x): x for x in clients if x is not None}.values():
        closer = getattr(c, "aclose", None)
        if closer is not None:
            await closer()


def run_and_report(
    config: EvalSettings,
    out_dir: Path,
    answers: AnswerSettings,
    run: Callable[[AnswererContext, Judge | None], Awaitable[R]],
    report_to_console: Callable[[R, Console], None],
    *,
    make_judge: Callable[[LLMClient | None], Judge | None],
    with_helper: bool = False,
    leniency_check: bool,
    questions: Callable[[], list[Question]],
    wrong_answers: Callable[[list[Question]], list[tuple[Question, str]]] | None = None,
    **answerer_options: Any,
) -> None:
    """Run an evaluation on its own clients, closed whatever happens; then print its report and, with
    ``--leniency-check``, the judge's false-accept rate (also written to ``out_dir``).

    ``make_judge`` gets the judge's client (None unless ``answers.judge`` is ``llm``); ``with_helper`` connects
    the helper model of the two-stage methods (none with ``--retrieval-only``); ``answerer_options`` go to the
    answerer context after ``answers``."""

    async def main() -> tuple[R, LeniencyReport | None]:
        from mark_eval.config import connect_helper

        answer_with_llm = not answers.retrieval_only
        client, judge_client = await connect_clients(config, answers.judge, need_answerer=answer_with_llm)
        helper_client = await connect_helper(config) if with_helper and answer_with_llm else None
        try:
            judge = make_judge(judge_client)
            answer_ctx = answerer_context(
                config,
                client,
                out_dir,
                budget_tokens=answers.budget_tokens,
                retrieval=answers.retrieval,
                mark_extraction=answers.mark_extraction,
                helper_llm=helper_client,
                **answerer_options,
            )
            return await run_then_check_judge(run(answer_ctx, judge), judge, leniency_check, questions, wrong_answers)
        finally:
            await close_clients(client, judge_client, helper_client)

    report, leniency = asyncio.run(main())
    console = console_out()
    report_to_console(report, console)
    if leniency is not None:
        report_leniency(leniency, out_dir, console)


def report_leniency(leniency: LeniencyReport, out_dir: Path, console: Console) -> None:
    """Write ``judge_leniency.json`` and print the judge's false-accept rate."""
    from memory_store.atomic import write_text_atomic

    write_text_atomic(out_dir / "judge_leniency.json", leniency.model_dump_json(indent=2) + "\n")
    console.print(
        f"judge leniency ({escape(leniency.judge)}): {leniency.false_accepts}/{leniency.total} known-wrong answers "
        f"accepted = {leniency.rate_percent}% false-accept rate"
    )


def print_skipped_methods(skipped_methods: list[str], console: Console) -> None:
    """Name the methods a ``--retrieval-only`` run left out."""
    if skipped_methods:
        skipped = ", ".join(skipped_methods)
        console.print(f"skipped with --retrieval-only (they need LLM calls to choose context): {skipped}")
