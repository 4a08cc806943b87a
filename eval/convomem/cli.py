"""``mark eval convomem`` and ``mark bench convomem``: thin shells over the library (composed into the root
CLI by ``mark_eval.cli``; what they share with ``mark eval locomo`` is in ``mark_eval.common``).

Everything the user typed is checked and the data is loaded before the output directory is touched, so bad
input leaves nothing half-written; errors are :class:`~memory_store.errors.InvalidInput` (exit code 2),
printed on one line by the root CLI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mark_eval.common import (
    AnswerSettings,
    BudgetTokens,
    Concurrency,
    LeniencyCheck,
    MarkExtraction,
    NoProgress,
    Retrieval,
    check_choices,
    choice,
    console_out,
    output_dir,
    run_and_report,
    run_options,
)
from memory_store.errors import InvalidInput

if TYPE_CHECKING:
    from mark_agents.llm import LLMClient
    from mark_eval.config import EvalSettings
    from mark_eval.convomem.judge import Judge

DEFAULT_METHODS = "full_context,rag,hybrid"
SAMPLE_METHODS = "full_context,rag"
SAMPLE_SIZES = "1,2"
SAMPLE_LIMIT = 1
DEFAULT_OUT = Path("runs/convomem")


def parse_sizes(text: str | None) -> tuple[int, ...] | None:
    if text is None or not text.strip():
        return None
    try:
        sizes = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise InvalidInput(f"--sizes must be comma-separated integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise InvalidInput(f"--sizes must be positive integers, got {text!r}")
    return sizes


def judge_choice(config: EvalSettings, judge: str) -> tuple[str, str | None]:
    """The judge of the run and, when ``auto`` did not pick the LLM judge, the warning that says so.

    ``auto``: the LLM judge when a judge model is configured apart from the answering model, else the exact
    (keyword) judge, loudly: the warning is printed and every table and plot names the judge.
    """
    if judge != "auto":
        return judge, None
    if not config.judge_apart:
        return "exact", (
            "--judge auto: no judge model configured apart from the answering model (MARK_JUDGE_MODEL ...), so "
            "the verdicts are the exact (keyword) judge's, not an LLM judge's; use --judge llm to let the "
            "answering model judge"
        )
    return "llm", None


def convomem_command(
    ctx: typer.Context,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="A ConvoMem file or directory (released layout, pre-mixed shards, or single test-case files).",
        ),
    ] = None,
    sample: Annotated[bool, typer.Option("--sample", help="Use the small sample shipped with mark.")] = False,
    category: Annotated[
        str | None,
        typer.Option(
            "--category", help="Only these categories (comma-separated; names like user_facts or user_evidence)."
        ),
    ] = None,
    evidence_count: Annotated[
        int | None, typer.Option("--evidence-count", help="Only items with N evidence messages.")
    ] = None,
    sizes: Annotated[
        str | None, typer.Option("--sizes", help="Conversation counts, e.g. 1,2,10,50 (default: ConvoMem's 1..300).")
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option(
            "--methods",
            help="Comma-separated: full_context, rag, "
            "rag_dense, rag_keyword, hybrid, mark, extracted_context, "
            f"block_based, mem0 (needs the mem0 extra) (default {DEFAULT_METHODS}).",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            min=1,
            help="Ask at most N questions per category and evidence count (chosen after the haystacks are built).",
        ),
    ] = None,
    concurrency: Concurrency = 1,
    budget_tokens: BudgetTokens = 4000,
    retrieval: Retrieval = "hybrid",
    retrieval_only: Annotated[
        bool, typer.Option("--retrieval-only", help="No LLM call: measure evidence recall and prompt sizes only.")
    ] = False,
    mark_extraction: MarkExtraction = "llm",
    judge: Annotated[
        str,
        typer.Option(
            "--judge", help="llm, exact, or auto (llm when a judge model is configured apart from the answering model)."
        ),
    ] = "auto",
    judge_max_tokens: Annotated[
        int, typer.Option("--judge-max-tokens", min=1, help="Output tokens of one LLM-judge reply.")
    ] = 64,
    judge_attempts: Annotated[
        int,
        typer.Option("--judge-attempts", min=1, help="LLM-judge calls per verdict while the reply is unparseable."),
    ] = 20,
    max_answer_tokens: Annotated[
        int, typer.Option("--max-answer-tokens", min=16, help="Output tokens of an answer (a ceiling, not a target).")
    ] = 1024,
    helper_model: Annotated[
        str | None,
        typer.Option(
            "--helper-model",
            help="Model of the helper passes of block_based and extracted_context on the answering endpoint "
            "(MARK_HELPER_BASE_URL, MARK_HELPER_API_KEY ... for another endpoint; default: the answering model).",
        ),
    ] = None,
    leniency_check: LeniencyCheck = False,
    mix: Annotated[
        str | None,
        typer.Option(
            "--mix",
            help="batched (default: the reference's construction, up to 100 questions share a haystack, at least "
            "10 haystacks per size) or standard (one question per haystack; the default of --sample, a smoke test).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the mixing.")] = 0,
    out: Annotated[Path | None, typer.Option("--out", help=f"Output directory (default {DEFAULT_OUT}).")] = None,
    no_progress: NoProgress = False,
) -> None:
    """Run the ConvoMem benchmark: full context vs RAG vs MARK vs hybrid across conversation counts."""
    from mark_eval.convomem.answerers import resolve_methods
    from mark_eval.convomem.categories import resolve_category
    from mark_eval.convomem.loaders import load_data, load_sample
    from mark_eval.convomem.mixing import DEFAULT_SIZES, MixConfig, build_cases, select_questions
    from mark_eval.convomem.runner import report_to_console, run_benchmark

    # -- everything the user typed, checked before any output exists
    if sample and data is not None:
        raise InvalidInput("give either --data PATH or --sample, not both")
    if not sample and data is None:
        raise InvalidInput("give --data PATH (a ConvoMem file or directory) or --sample")
    method_list = resolve_methods(methods or (SAMPLE_METHODS if sample else DEFAULT_METHODS))
    if "mem0" in method_list and not retrieval_only:
        from mark_eval.convomem.answerers.mem0_memory import require_mem0

        require_mem0()
    check_choices(retrieval, judge, ("llm", "exact", "auto"), mark_extraction)
    mix = mix or ("standard" if sample else "batched")
    choice(mix, ("standard", "batched"), "--mix")
    categories = {resolve_category(c) for c in category.split(",") if c.strip()} if category else None
    size_list = parse_sizes(sizes if sizes is not None else (SAMPLE_SIZES if sample else None))
    if sample and limit is None:
        limit = SAMPLE_LIMIT
    out_dir = output_dir(out, DEFAULT_OUT)

    loaded = load_sample() if sample else load_data(data)  # type: ignore[arg-type]
    selected = select_questions(loaded, categories, evidence_count, limit)
    config = MixConfig(sizes=size_list or DEFAULT_SIZES, mode=mix, seed=seed)  # type: ignore[arg-type]
    mixed = build_cases(selected, config, sizes_given=size_list is not None)
    if not mixed.count():
        detail = "; ".join(mixed.warnings[:3])
        raise InvalidInput(f"no test cases for the selected questions and sizes{': ' + detail if detail else ''}")
    err = Console(stderr=True)
    for warning in [f"skipped {reason}" for reason in loaded.skipped] + mixed.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}")

    from mark_eval.config import EvalSettings

    config = EvalSettings.from_settings(ctx.obj(), helper_model=helper_model)
    helper_cfg = config.helper_llm
    judge_kind, judge_warning = ("none", None) if retrieval_only else judge_choice(config, judge)
    if judge_warning:
        err.print(f"[yellow]warning:[/] {escape(judge_warning)}")
    answers = AnswerSettings(budget_tokens, retrieval, retrieval_only, judge_kind, mark_extraction)
    fingerprint = {
        "data": "sample" if sample else str(data),
        "seed": seed,
        "mix": mix,
        **answers.fingerprint(),
        "max_answer_tokens": max_answer_tokens,
        "helper_model": None if helper_cfg is None else f"{helper_cfg.base_url or 'local'}|{helper_cfg.model}",
    }
    options = run_options(
        out_dir,
        fingerprint,
        methods=method_list,
        concurrency=concurrency,
        retrieval_only=retrieval_only,
        progress=not no_progress,
    )
    n_questions = sum(len(c.questions) for c in mixed.metas())
    streamed = f", {len(mixed.streamed)} of them streamed from pre-mixed shards" if mixed.streamed else ""
    err.print(
        f"convomem: {n_questions} questions asked over {mixed.count()} haystacks ({mix}{streamed}), methods "
        f"{', '.join(method_list)}, judge {judge_kind}"
    )

    def make_judge(judge_client: LLMClient | None) -> Judge | None:
        if judge_kind == "llm":
            from mark_eval.convomem.judge import LLMJudge

            return LLMJudge(judge_client, attempts=judge_attempts, max_tokens=judge_max_tokens)
        if judge_kind == "exact":
            from mark_eval.convomem.judge import ExactJudge

            return ExactJudge()
        return None

    run_and_report(
        config,
        out_dir,
        answers,
        lambda answer_ctx, run_judge: run_benchmark(mixed, options, answer_ctx, run_judge, console=err),
        report_to_console,
        make_judge=make_judge,
        with_helper=True,
        leniency_check=leniency_check,
        questions=selected.asked_questions,
        max_answer_tokens=max_answer_tokens,
    )


def bench_command(
    ctx: typer.Context,
    conversations: Annotated[int, typer.Option("--conversations", min=1, help="Largest haystack.")] = 300,
    sizes: Annotated[
        str | None, typer.Option("--sizes", help="Haystack sizes (default 10,50,150,300 up to --conversations).")
    ] = None,
    questions: Annotated[int, typer.Option("--questions", min=1, help="Questions per size.")] = 12,
    methods: Annotated[
        str, typer.Option("--methods", help="Methods to measure.")
    ] = "full_context,rag,rag_dense,rag_keyword,hybrid",
    budget_tokens: Annotated[int, typer.Option("--budget-tokens", min=256)] = 4000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the figures as JSON here.")] = None,
) -> None:
    """ConvoMem-shaped retrieval benchmark without LLM calls: prompt tokens, retrieval time, evidence recall."""
    from mark_eval.convomem.answerers import resolve_methods
    from mark_eval.convomem.bench import BenchConfig, print_bench, run_bench

    method_list = resolve_methods(methods)
    size_list = parse_sizes(sizes) or (*tuple(s for s in (10, 50, 150, 300) if s < conversations), conversations)
    if max(size_list) > conversations:
        raise InvalidInput(f"--sizes go beyond --conversations {conversations}")
    from mark_eval.config import embedder_factory
    from memory_store.config import StoreSettings

    store = ctx.obj().store if ctx is not None and callable(ctx.obj) else StoreSettings()
    config = BenchConfig(
        conversations=conversations,
        sizes=size_list,
        questions=questions,
        methods=method_list,
        budget_tokens=budget_tokens,
        seed=seed,
    )
    result = run_bench(config, embedder_factory(store))
    print_bench(result, console_out())
    if json_out is not None:
        from memory_store.atomic import write_text_atomic

        write_text_atomic(json_out, json.dumps(result.model_dump(), indent=2) + "\n")
