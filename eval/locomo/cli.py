"""``mark eval locomo``: LoCoMo read natively, answered by the same methods as ConvoMem, judged like the papers.

Everything the user typed is checked and the data loaded before the output directory is touched; errors are
:class:`~memory_store.errors.InvalidInput` (exit code 2), printed on one line by the root CLI.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from mark_eval.common import (
    AnswerSettings,
    BudgetTokens,
    Concurrency,
    LeniencyCheck,
    MarkExtraction,
    NoProgress,
    Retrieval,
    check_choices,
    output_dir,
    run_and_report,
    run_options,
)
from memory_store.errors import InvalidInput

if TYPE_CHECKING:
    from mark_agents.llm import LLMClient
    from mark_eval.convomem.judge import Judge

DEFAULT_METHODS = "full_context,rag"
DEFAULT_OUT = Path("runs/locomo")
#: about what mem0's paper reports per question for its memory (~2K tokens)
DEFAULT_BUDGET = 2000


def parse_categories(text: str | None) -> set[str] | None:
    """Names (``temporal``) or LoCoMo's numbers (``2``), comma-separated."""
    from mark_eval.locomo.categories import CATEGORY_NAMES

    if text is None or not text.strip():
        return None
    out: set[str] = set()
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        if part.isdigit() and int(part) in CATEGORY_NAMES:
            out.add(CATEGORY_NAMES[int(part)])
        elif part.replace("-", "_") in CATEGORY_NAMES.values():
            out.add(part.replace("-", "_"))
        else:
            names = ", ".join(f"{n} ({v})" for n, v in CATEGORY_NAMES.items())
            raise InvalidInput(f"unknown LoCoMo category {part!r}; choose from {names}")
    return out


def locomo_command(
    ctx: typer.Context,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="LoCoMo data: locomo10.json, a one-dialogue file (or a list of them), or a directory."
        ),
    ] = None,
    methods: Annotated[
        str,
        typer.Option(
            "--methods",
            help="Comma-separated: full_context, rag, rag_dense, rag_keyword, hybrid, mark, extracted_context, "
            "block_based.",
        ),
    ] = DEFAULT_METHODS,
    category: Annotated[
        str | None, typer.Option("--category", help="Only these categories: names or numbers 1-5, comma-separated.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="At most N questions per category of each dialogue.")
    ] = None,
    concurrency: Concurrency = 1,
    budget_tokens: BudgetTokens = DEFAULT_BUDGET,
    retrieval: Retrieval = "hybrid",
    mark_extraction: MarkExtraction = "llm",
    retrieval_only: Annotated[
        bool, typer.Option("--retrieval-only", help="No LLM call: evidence recall and prompt sizes only.")
    ] = False,
    judge: Annotated[
        str, typer.Option("--judge", help="llm (the J judge) or none (token F1 and BLEU-1 only).")
    ] = "llm",
    leniency_check: LeniencyCheck = False,
    out: Annotated[Path | None, typer.Option("--out", help=f"Output directory (default {DEFAULT_OUT}).")] = None,
    no_progress: NoProgress = False,
) -> None:
    """Run LoCoMo: J accuracy (categories 1-4 headline, adversarial apart), F1, BLEU-1, evidence recall."""
    from mark_eval.config import EvalSettings
    from mark_eval.convomem.answerers import resolve_methods
    from mark_eval.locomo.judge import known_wrong_answers
    from mark_eval.locomo.loader import load_locomo, select
    from mark_eval.locomo.prompts import LOCOMO_PROMPTS
    from mark_eval.locomo.run import report_to_console, run_locomo

    # -- everything the user typed, checked before any output exists
    if data is None:
        raise InvalidInput("give --data FILE (LoCoMo's locomo10.json or a one-dialogue file)")
    method_list = resolve_methods(methods)
    check_choices(retrieval, judge, ("llm", "none"), mark_extraction)
    categories = parse_categories(category)
    out_dir = output_dir(out, DEFAULT_OUT)
    loaded = load_locomo(data)
    cases = select(loaded, categories, limit)
    if not cases:
        raise InvalidInput(f"{data}: no questions of the selected categories")
    err = Console(stderr=True)
    for warning in loaded.warnings:
        err.print(f"[yellow]warning:[/] {warning}")

    config = EvalSettings.from_settings(ctx.obj())
    judge_kind = "none" if retrieval_only else judge
    if judge_kind == "llm" and not config.judge_apart:
        err.print(
            "[yellow]warning:[/] no separate judge model (MARK_JUDGE_*): the answering model judges its own answers"
        )
    answers = AnswerSettings(budget_tokens, retrieval, retrieval_only, judge_kind, mark_extraction)
    fingerprint = {"data": str(data), **answers.fingerprint()}
    options = run_options(
        out_dir,
        fingerprint,
        methods=method_list,
        concurrency=concurrency,
        retrieval_only=retrieval_only,
        progress=not no_progress,
        label="locomo",
    )
    n_questions = sum(len(c.questions) for c in cases)
    err.print(
        f"locomo: {len(cases)} dialogues, {n_questions} questions, methods {', '.join(method_list)}, judge {judge_kind}"
    )

    def make_judge(judge_client: LLMClient | None) -> Judge | None:
        if judge_kind != "llm":
            return None
        from mark_eval.locomo.judge import JJudge

        return JJudge(judge_client)

    run_and_report(
        config,
        out_dir,
        answers,
        lambda answer_ctx, run_judge: run_locomo(cases, options, answer_ctx, run_judge, console=err),
        report_to_console,
        make_judge=make_judge,
        leniency_check=leniency_check,
        questions=lambda: [q for c in cases for q in c.questions],
        wrong_answers=known_wrong_answers,
        prompts=LOCOMO_PROMPTS,
    )
