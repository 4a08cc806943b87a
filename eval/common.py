"""Steps that ``mark eval convomem`` and ``mark eval locomo`` share around a run, kept in one place so the
two commands check, close and report the same way."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich.console import Console
from rich.markup import escape

from memory_store.errors import InvalidInput

if TYPE_CHECKING:
    from mark_eval.config import EvalSettings
    from mark_eval.convomem.answerers import AnswererContext
    from mark_eval.convomem.judge import Judge, LeniencyReport
    from mark_eval.convomem.runner import RunOptions
    from mark_eval.convomem.schema import Question

R = TypeVar("R")


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


def report_leniency(leniency: LeniencyReport, out_dir: Path, console: Console) -> None:
    """Write ``judge_leniency.json`` and print the judge's false-accept rate."""
    from mark_eval.convomem.atomic import write_text_atomic

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
