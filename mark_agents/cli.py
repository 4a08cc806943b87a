"""The agents' sub-commands of ``mark``; the root (mark_cli.main) composes them via :func:`register`.

Commands read settings with ``ctx.obj()`` (a lazy factory) and raise MarkError subclasses; the root prints
those on one line. Heavy imports happen inside the commands so ``mark --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from memory_store.cli import ForgetAbout, ForgetId, ForgetReason, ForgetYes, Json, User
from memory_store.cli import forget as store_forget

if TYPE_CHECKING:
    from mark_agents.config import LLMSettings, Settings

# -- mark llm ---------------------------------------------------------------------------------------------

llm_app = typer.Typer(no_args_is_help=True)


def _llm_settings(ctx: typer.Context, *, n_ctx: int | None = None, model: Path | None = None) -> LLMSettings:
    """The chat LLM's settings with the command-line overrides of the local server applied."""
    settings: Settings = ctx.obj()
    update: dict[str, object] = {}
    if n_ctx is not None:
        update["local_n_ctx"] = n_ctx
    if model is not None:
        update["local_model_path"] = model.expanduser().resolve()
    return settings.llm.model_copy(update=update) if update else settings.llm


@llm_app.command("serve")
def llm_serve(
    ctx: typer.Context,
    foreground: Annotated[
        bool, typer.Option("--foreground", help="Run attached to this terminal (Ctrl-C stops it).")
    ] = False,
    n_ctx: Annotated[int | None, typer.Option("--n-ctx", help="Context size in tokens (default 8192).")] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="A GGUF file (default: the bundled Qwen2.5-Coder-0.5B-Instruct).", exists=True),
    ] = None,
) -> None:
    """Start the local model server (detached unless --foreground) and print its base URL.

    It is shared by every data directory using the same model and context size, and stops by itself after
    MARK_LLM_IDLE_SECONDS (default 900) without a request.
    """
    from mark_agents.local_llm import LocalServer

    server = LocalServer(_llm_settings(ctx, n_ctx=n_ctx, model=model), ctx.obj().models_dir)
    if foreground:
        raise typer.Exit(server.serve_foreground())
    typer.echo(server.ensure_running())


@llm_app.command("status")
def llm_status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """List the local model servers running for this user (shared by every data directory)."""
    from mark_agents.local_llm import running_servers

    servers = running_servers(ctx.obj().llm)
    if as_json:
        typer.echo(json.dumps([s.model_dump() for s in servers], indent=2))
        return
    if not servers:
        typer.echo("not running")
        return
    typer.echo(f"{'pid':>8}  {'port':>5}  {'n_ctx':>6}  {'uptime':>8}  {'idle':>8}  {'idle max':>8}  model")
    for s in servers:
        limit = "never" if not s.idle_limit_s else _seconds(s.idle_limit_s)
        idle = "?" if s.idle_s is None else _seconds(s.idle_s)
        typer.echo(
            f"{s.pid:>8}  {s.port:>5}  {s.n_ctx or 0:>6}  {_seconds(s.uptime_s or 0):>8}  {idle:>8}  {limit:>8}  "
            f"{s.model_path}"
        )


def _seconds(value: float) -> str:
    value = int(value)
    return f"{value // 60}m{value % 60:02d}s" if value >= 60 else f"{value}s"


@llm_app.command("stop")
def llm_stop(ctx: typer.Context) -> None:
    """Stop every local model server of this user."""
    from mark_agents.local_llm import stop_all

    stopped = stop_all(ctx.obj().llm)
    if not stopped:
        typer.echo("not running")
    for s in stopped:
        typer.echo(f"stopped pid {s.pid} ({s.model_path}, port {s.port})")


# -- mark chat ----------------------------------------------------------------------------------------------


def chat(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", "-u", help="Who is chatting (memories are per user).")],
    session: Annotated[
        str | None, typer.Option("--session", "-s", help="Conversation to resume or start (default: 'default').")
    ] = None,
    no_stream: Annotated[
        bool, typer.Option("--no-stream", help="Print each reply whole instead of streaming.")
    ] = False,
) -> None:
    """Chat with long-term memory. /help lists the commands; works with piped stdin too."""
    from mark_agents.repl import run_chat

    raise typer.Exit(run_chat(ctx.obj(), user, session, stream=not no_stream))


# -- mark memory rederive / purge ---------------------------------------------------------------------------


def memory_rederive(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", "-u", help="The user whose memories to re-derive.")],
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Delete the current memories first (their history is kept).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Re-derive a user's memories from their raw turns with the LLM (after a model or prompt change)."""
    import asyncio

    from rich.console import Console
    from rich.markup import escape

    from mark_agents.agent import MemoryAgent
    from memory_store.validation import check_scope_id

    check_scope_id(user)

    async def run():
        agent = MemoryAgent(ctx.obj())
        try:
            return await agent.arederive(user, fresh=fresh)
        finally:
            await agent.aclose()

    console = Console(stderr=True)
    with console.status(f"re-deriving the memories of {escape(repr(user))} from their raw turns…"):
        result = asyncio.run(run())
    if as_json:
        typer.echo(result.model_dump_json())
    else:
        added = sum(len(r.added) for r in result.reports)
        confirmed = sum(len(r.confirmed) for r in result.reports)
        superseded = sum(len(r.superseded) for r in result.reports)
        disputed = sum(len(r.disputed) for r in result.reports)
        typer.echo(
            f"{result.status}: {len(result.turn_ids)} turns, {len(result.reports)} exchanges processed; "
            f"{added} added, {confirmed} confirmed, {superseded} superseded, {disputed} disputed "
            f"({result.usage.calls} LLM calls, {result.usage.total_tokens} tokens)"
        )
    if result.error:
        typer.secho(f"error: {result.error} - those turns are kept and retried later", err=True, fg="red")
        raise typer.Exit(1)


def memory_purge(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", "-u", help="The user whose memories to use (required).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Remove every trace of a user: memories, raw turns, history, feedback, indexes, vectors, chat threads."""
    import asyncio

    from mark_agents.agent import MemoryAgent
    from memory_store import cli as store_cli

    store_cli.confirm_purge(user, yes)

    async def run():
        agent = MemoryAgent(ctx.obj())  # connects no LLM: a purge needs none
        try:
            return await agent.apurge_user(user)
        finally:
            await agent.aclose()

    store_cli.show_purge(user, asyncio.run(run()), as_json)


def memory_forget(
    ctx: typer.Context,
    user: User,
    memory_id: ForgetId = None,
    about: ForgetAbout = None,
    yes: ForgetYes = False,
    reason: ForgetReason = "forgotten on request",
    as_json: Json = False,
) -> None:
    # The help text is the store command's (set below): this is the same command, run through the agent.
    import asyncio

    from mark_agents.agent import MemoryAgent
    from memory_store import cli as store_cli

    async def run():
        agent = MemoryAgent(ctx.obj())  # connects no LLM: forgetting needs none
        try:
            plan = store_cli.confirm_forget(agent.store, user, memory_id, about, yes, as_json)
            if plan is None:
                return None
            return await agent.aforget(user, plan=plan, reason=reason, actor="cli")
        finally:
            await agent.aclose()

    report = asyncio.run(run())
    if report is not None:
        store_cli.show_forget(report, memory_id, as_json)


memory_forget.__doc__ = store_forget.__doc__


# -- mark bench chat -----------------------------------------------------------------------------------------


def bench_chat(
    ctx: typer.Context,
    memories: Annotated[int, typer.Option("--memories", min=1, help="Memories of the user for (a).")] = 10_000,
    history_turns: Annotated[
        int, typer.Option("--history-turns", min=0, help="Earlier turns (episodes) of the user for (a).")
    ] = 50_000,
    queries: Annotated[int, typer.Option("--queries", min=1, help="Chat turns timed for (a).")] = 200,
    turns: Annotated[int, typer.Option("--turns", min=1, help="Turns of the scripted conversation (c).")] = 60,
    session_turns: Annotated[int, typer.Option("--session-turns", min=1, help="Turns per session in (c).")] = 10,
    exchanges: Annotated[int, typer.Option("--exchanges", min=1, help="Exchanges extracted with the model (b).")] = 4,
    no_llm: Annotated[bool, typer.Option("--no-llm", help="Skip (b), the only part that needs the model.")] = False,
    keep: Annotated[
        Path | None, typer.Option("--keep", help="Build the scratch store here and reuse it (default: a temp dir).")
    ] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG of input tokens per turn.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Memory overhead per turn (LLM time excluded), extraction throughput, input tokens per turn."""
    import json

    from rich.console import Console

    from mark_agents.bench import plot_tokens, render, run_chat_bench

    result = run_chat_bench(
        ctx.obj(),
        memories=memories,
        history_turns=history_turns,
        queries=queries,
        turns=turns,
        session_turns=session_turns,
        exchanges=exchanges,
        use_llm=not no_llm,
        keep=keep.expanduser().resolve() if keep else None,
        progress=not as_json,
    )
    if plot is not None:
        result["plot"] = str(plot_tokens(result["tokens"], plot))
    if as_json:
        typer.echo(json.dumps(result, default=str))
        return
    render(result, Console())
    if plot is not None:
        typer.echo(f"plot: {plot}")


# -- mark bench forget ---------------------------------------------------------------------------------------


def bench_forget(
    ctx: typer.Context,
    llm: Annotated[
        bool, typer.Option("--llm", help="Chat and extract with the configured model (default: a scripted one).")
    ] = False,
    facts: Annotated[
        int | None, typer.Option("--facts", min=1, help="Forget only the first N facts (default: all 21).")
    ] = None,
    keep: Annotated[
        Path | None, typer.Option("--keep", help="Run in this (empty) directory and keep it (default: a temp dir).")
    ] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG bar chart of the probes.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Adversarial forgetting probes: plant facts through chat, forget them, try every way to get them back."""
    from rich.console import Console

    from mark_agents.forget_probes import plot as plot_probes
    from mark_agents.forget_probes import render, run_forget_bench

    err = Console(stderr=True)
    result = run_forget_bench(
        ctx.obj(),
        use_llm=llm,
        facts=facts,
        keep=keep.expanduser().resolve() if keep else None,
        log=(lambda message: None) if as_json else (lambda message: err.print(f"[dim]{message}…[/]")),
    )
    if plot is not None:
        result["plot"] = str(plot_probes(result, plot))
    if as_json:
        typer.echo(json.dumps(result, default=str))
    else:
        render(result, Console())
        if plot is not None:
            typer.echo(f"plot: {plot}")
    if result["resurfaced"]:
        raise typer.Exit(1)


# -- mark bench extraction ------------------------------------------------------------------------------------


def bench_extraction(
    ctx: typer.Context,
    local_model: Annotated[
        list[str] | None,
        typer.Option(
            "--local-model",
            help="An embedded memory model to score: a bundled name (qwen2.5-coder-0.5b, qwen2.5-coder-1.5b) or a "
            "GGUF file; repeat to compare. Default: the configured memory model (MARK_MEMORY_LLM_*).",
        ),
    ] = None,
    set_path: Annotated[
        Path | None, typer.Option("--set", help="Labelled set (default: tests/data/extraction_set.json).")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N exchanges.")] = None,
    out: Annotated[Path, typer.Option("--out", help="JSON file of the figures and every note.")] = Path(
        "extraction-bench.json"
    ),
    plot_path: Annotated[Path, typer.Option("--plot", help="PNG bar chart.")] = Path("extraction-bench.png"),
    markdown: Annotated[bool, typer.Option("--markdown", help="Also print the table as Markdown.")] = False,
) -> None:
    """Score the memory model's extraction on labelled exchanges: fact coverage, one fact per note, speed."""
    from rich.console import Console

    from mark_agents.bench_extraction import (
        default_set_path,
        load_set,
        markdown_table,
        plot,
        render,
        run_extraction_bench,
    )

    path = (set_path or default_set_path()).expanduser()
    exchanges = load_set(path)[:limit]
    result = run_extraction_bench(ctx.obj(), exchanges, list(local_model or [None]), set_path=path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    plot(result, plot_path)
    render(result, Console())
    if markdown:
        typer.echo(markdown_table(result))
    typer.echo(f"figures and notes: {out}\nchart: {plot_path}")


# -- registration -------------------------------------------------------------------------------------------


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add the agents' commands to the root app (``bench_app`` receives the agents' benchmarks)."""
    from memory_store import cli as store_cli

    app.add_typer(llm_app, name="llm", help="Run the embedded local model server.")
    app.command("chat")(chat)
    store_cli.memory_app.command("rederive")(memory_rederive)
    # The older name, kept so scripts keep working (`rebuild-index` is the store's index rebuild).
    store_cli.memory_app.command("rebuild", help="Old name of `mark memory rederive` (same command).")(memory_rederive)
    store_cli.replace_command("purge", memory_purge)
    store_cli.replace_command("forget", memory_forget)
    bench_app.command("chat")(bench_chat)
    bench_app.command("forget")(bench_forget)
    bench_app.command("extraction")(bench_extraction)
