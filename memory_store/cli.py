"""`mark memory ...` and `mark bench store`: a thin shell over MemoryStore. Every command takes --json.

Whatever a user or a model wrote is shown literally: escaped before rich sees it (``[/]`` in a memory is text,
not markup), and emoji codes are not replaced.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from memory_store.errors import InvalidInput, StoreError
from memory_store.files import private_output
from memory_store.ids import short_id
from memory_store.models import ForgetPlan, ForgetReport, MemoryKind, PurgeReport
from memory_store.store import MemoryStore

memory_app = typer.Typer(no_args_is_help=True)
bench_app = typer.Typer(no_args_is_help=True)
console = Console(emoji=False)

User = Annotated[str, typer.Option("--user", "-u", help="The user whose memories to use (required).")]
Json = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
ForgetId = Annotated[str | None, typer.Argument(help="Memory id, or its short form as lists show it.")]
ForgetAbout = Annotated[
    str | None, typer.Option("--about", help="Forget every note and episode about this topic (asks first).")
]
ForgetYes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation (--about).")]
ForgetReason = Annotated[str, typer.Option("--reason")]
Kinds = Annotated[
    list[MemoryKind] | None, typer.Option("--kind", "-k", help="Only these kinds (repeatable).", show_default=False)
]


def open_store(ctx: typer.Context) -> MemoryStore:
    return MemoryStore(ctx.obj().store)


def emit(data: object) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=None, default=str))


@memory_app.command("add")
def add(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="The memory text ('-' reads stdin).")],
    user: User,
    kind: Annotated[MemoryKind, typer.Option("--kind", "-k")] = MemoryKind.user_question,
    session: Annotated[str | None, typer.Option("--session")] = None,
    trust: Annotated[float, typer.Option("--trust", min=0.0, max=1.0)] = 0.6,
    as_json: Json = False,
) -> None:
    """Store one memory for a user."""
    if text == "-":
        text = sys.stdin.read()
    with open_store(ctx) as store:
        m = store.add(text, user, kind=kind, session_id=session, trust=trust, actor="cli")
    if as_json:
        emit(m.model_dump(mode="json"))
    else:
        console.print(f"added [bold]{short_id(m.id)}[/]  {escape(m.text)}")


@memory_app.command("search")
def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="What to look for.")],
    user: User,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000)] = 10,
    kind: Kinds = None,
    session: Annotated[str | None, typer.Option("--session")] = None,
    mode: Annotated[str, typer.Option("--mode", help="hybrid, dense or keyword")] = "hybrid",
    history: Annotated[bool, typer.Option("--history", help="Include superseded memories.")] = False,
    explain: Annotated[bool, typer.Option("--explain", help="Show every component of the score.")] = False,
    as_json: Json = False,
) -> None:
    """Hybrid, decay-ranked search in one user's memories."""
    with open_store(ctx) as store:
        hits = store.search(
            query,
            user,
            limit=limit,
            kinds=kind,
            session_id=session,
            mode=mode,
            include_history=history,
            explain=explain or as_json,
        )
    if as_json:
        emit(
            [
                {
                    "score": h.score,
                    "memory": h.memory.model_dump(mode="json"),
                    "explain": h.explain.model_dump() if h.explain else None,
                }
                for h in hits
            ]
        )
        return
    if not hits:
        console.print("no matching memories")
        return
    table = Table("id", "score", "kind", "text", *(["sim", "recency", "freq", "trust"] if explain else []))
    for h in hits:
        extra = []
        if explain and h.explain:
            e = h.explain
            extra = [f"{e.similarity:.2f}", f"{e.recency:.2f}", f"{e.frequency:.2f}", f"{e.trust:.2f}"]
        status = "" if h.memory.status == "active" else f" [dim]({h.memory.status})[/]"
        table.add_row(
            short_id(h.memory.id), f"{h.score:.3f}", h.memory.kind.value, escape(h.memory.text) + status, *extra
        )
    console.print(table)


@memory_app.command("list")
def list_(
    ctx: typer.Context,
    user: User,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10000)] = 50,
    offset: Annotated[int, typer.Option("--offset", min=0)] = 0,
    kind: Kinds = None,
    history: Annotated[bool, typer.Option("--history", help="Include superseded memories.")] = False,
    as_json: Json = False,
) -> None:
    """List a user's memories, newest first (paginated)."""
    with open_store(ctx) as store:
        page = store.list(user, kinds=kind, include_history=history, limit=limit, offset=offset)
    if as_json:
        emit(
            {
                "total": page.total,
                "offset": page.offset,
                "next_offset": page.next_offset,
                "items": [m.model_dump(mode="json") for m in page.items],
            }
        )
        return
    table = Table("id", "kind", "text", "confirmed", "recalled", "trust", title=f"{page.total} memories")
    for m in page.items:
        status = "" if m.status == "active" else f" [dim]({m.status})[/]"
        table.add_row(
            short_id(m.id),
            m.kind.value,
            escape(m.text) + status,
            str(m.confirm_count),
            str(m.recall_count),
            f"{m.trust:.2f}",
        )
    console.print(table)
    if page.next_offset is not None:
        console.print(f"[dim]more: --offset {page.next_offset}[/]")


@memory_app.command("history")
def history(
    ctx: typer.Context,
    user: User,
    memory_id: Annotated[str | None, typer.Argument(help="One memory (id, or its short form).")] = None,
    as_json: Json = False,
) -> None:
    """The audit trail: every add, update, confirm, supersede, dispute and delete, with its reason."""
    with open_store(ctx) as store:
        mid = store.resolve_id(memory_id, user) if memory_id else None
        events = store.history(user, mid)
    if as_json:
        emit([e.model_dump(mode="json") for e in events])
        return
    table = Table("when", "memory", "event", "old", "new", "reason")
    for e in events:
        table.add_row(
            e.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            escape(short_id(e.memory_id)),
            escape(e.event),
            escape(e.old_text or ""),
            escape(e.new_text or ""),
            escape(e.reason),
        )
    console.print(table)


@memory_app.command("forget")
def forget(
    ctx: typer.Context,
    user: User,
    memory_id: ForgetId = None,
    about: ForgetAbout = None,
    yes: ForgetYes = False,
    reason: ForgetReason = "forgotten on request",
    as_json: Json = False,
) -> None:
    """Forget a memory, or everything about a topic, so that it never comes back.

    Removes the note (and its earlier versions), redacts the fact where it stands in the raw turns, keeps history
    events without their text, and records a fingerprint (hashed, no text) so rebuilds and extraction never
    re-derive it from what was said before. Saying it again later is new information. (With mark_agents
    installed, its agent runs this command and rewrites the user's chat threads too.)
    """
    with open_store(ctx) as store:
        plan = confirm_forget(store, user, memory_id, about, yes, as_json)
        if plan is None:
            return
        report = store.forget(user, plan=plan, reason=reason, actor="cli")
    show_forget(report, memory_id, as_json)


def confirm_forget(
    store: MemoryStore, user: str, memory_id: str | None, about: str | None, yes: bool, as_json: bool
) -> ForgetPlan | None:
    """Plan a forget and, for --about, show the plan and ask (unless --yes). None: nothing matches the topic."""
    if (memory_id is None) == (about is None):
        raise InvalidInput("give a memory id or --about TOPIC")
    plan = store.plan_forget(user, memory_id, about=about)
    if about is None:
        return plan
    if not plan.memories and not plan.turns:
        if as_json:
            emit({"deleted": [], "memories": [], "turns": [], "matched": 0})
        else:
            console.print("nothing matches that topic")
        return None
    if not as_json or not yes:
        _show_plan(plan)
    if not yes:
        if not sys.stdin.isatty():
            raise InvalidInput("forget --about needs --yes when not run interactively")
        typer.confirm(
            f"Forget these {len(plan.memories)} memories and the matching parts of {len(plan.turns)} turns?",
            abort=True,
        )
    return plan


def show_forget(report: ForgetReport, memory_id: str | None, as_json: bool) -> None:
    if as_json:
        deleted = report.memories[0] if memory_id and report.memories else report.memories
        emit({"deleted": deleted, **report.model_dump()})
        return
    n = len(report.memories)
    line = f"forgot {n} memor{'y' if n == 1 else 'ies'} ({', '.join(short_id(m) for m in report.memories) or '-'})"
    if report.redacted_memories:
        line += f", rewrote {len(report.redacted_memories)} that held it beside other facts"
    line += f"; redacted {len(report.turns)} turns, {report.history} history events, {report.chat_threads} chat threads"
    console.print(escape(line))


def _show_plan(plan: ForgetPlan) -> None:
    table = Table("what", "id", "text", title=f"{len(plan.memories)} memories and {len(plan.turns)} turns match")
    for m in plan.memories:
        status = "" if m.status == "active" else f" [dim]({m.status})[/]"
        table.add_row("memory", short_id(m.id), escape(m.text) + status)
    for t in plan.turns:
        table.add_row(f"turn ({escape(t.role)})", short_id(t.id), escape(t.content[:200]))
    console.print(table)


@memory_app.command("purge")
def purge(
    ctx: typer.Context,
    user: User,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: Json = False,
) -> None:
    """Remove every trace of a user: memories, raw turns, history, feedback, indexes, vectors."""
    confirm_purge(user, yes)
    with open_store(ctx) as store:
        report = store.purge_user(user)
    show_purge(user, report, as_json)


def replace_command(name: str, command: Callable[..., None]) -> None:
    """Let a package that keeps more about a user than the store does own a `mark memory` command (mark_agents
    owns `purge` and `forget`: its agent removes the fact or the user from the chat threads too)."""
    memory_app.registered_commands = [c for c in memory_app.registered_commands if c.name != name]
    memory_app.command(name)(command)


def confirm_purge(user: str, yes: bool) -> None:
    """Ask before a purge, unless --yes; without a terminal to ask on, --yes is required."""
    if not yes:
        if not sys.stdin.isatty():
            raise InvalidInput("purge needs --yes when not run interactively")
        typer.confirm(f"Remove every trace of user {user!r}?", abort=True)


def show_purge(user: str, report: PurgeReport, as_json: bool) -> None:
    if as_json:
        emit(report.model_dump())
    else:
        console.print(
            f"purged {escape(repr(user))}: {report.memories} memories, {report.turns} turns, "
            f"{report.history} history events, {report.feedback} feedback"
        )


@memory_app.command("export")
def export(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", "-u", help="The user to export.")] = None,
    all_users: Annotated[bool, typer.Option("--all", help="Admin: export every user.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File (default: stdout).")] = None,
    as_json: Json = False,
) -> None:
    """Export memories, history, raw turns and feedback as JSON lines (import restores them exactly)."""
    if (user is None) == (not all_users):
        raise InvalidInput("give either --user U or --all")
    if output is not None and output.is_dir():
        raise InvalidInput(f"--output {output} is a directory; give the name of a file to write")
    with open_store(ctx) as store:
        if output is None:
            n = store.export_jsonl(sys.stdout, user_id=user)
        else:
            with private_output(output) as fh:  # written whole or not at all, no temporary file left behind
                n = store.export_jsonl(fh, user_id=user)
    if output is not None:
        if as_json:
            emit({"records": n, "output": str(output)})
        else:
            console.print(f"exported {n} records to {escape(str(output))}")


@memory_app.command("import")
def import_(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A file written by `mark memory export`.")],
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite memories that already exist.")] = False,
    as_json: Json = False,
) -> None:
    """Import an export file. All lines are validated first; nothing is written if any is bad."""
    if not path.is_file():
        raise InvalidInput(f"{path}: no such file")
    with open_store(ctx) as store:
        n = store.import_jsonl(path, replace=replace)
    if as_json:
        emit({"records": n})
    else:
        console.print(f"imported {n} records")


@memory_app.command("check")
def check(
    ctx: typer.Context,
    repair: Annotated[bool, typer.Option("--repair", help="Repair what differs (SQLite is the truth).")] = False,
    as_json: Json = False,
) -> None:
    """Admin: are SQLite (the truth) and the vector index consistent?"""
    with open_store(ctx) as store:
        if repair:
            store.reconcile()
        report = store.check()
    if as_json:
        emit(report.model_dump())
    else:
        state = "[green]ok[/]" if report.ok else "[red]inconsistent[/]"
        console.print(f"{state}: {report.memories} memories, {report.vectors} vectors, {report.pending_outbox} pending")
        for p in report.problems:
            console.print(f"  - {escape(p)}")
    if not report.ok:
        raise typer.Exit(1)


@memory_app.command("rebuild-index")
def rebuild_index(ctx: typer.Context, as_json: Json = False) -> None:
    """Admin: rebuild the vector and keyword indexes from SQLite."""
    with open_store(ctx) as store:
        n = store.rebuild()
    if as_json:
        emit({"vectors": n})
    else:
        console.print(f"rebuilt the index: {n} vectors")


@memory_app.command("pg-dev")
def pg_dev(
    ctx: typer.Context,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where the server keeps its data (default: MARK_HOME/postgres).")
    ] = None,
    stop: Annotated[bool, typer.Option("--stop", help="Stop the server instead.")] = False,
) -> None:
    """Start a local Postgres with pgvector (the pgserver wheel, offline) and print its URL:
    `export MARK_STORE_URL=$(mark memory pg-dev)`."""
    from memory_store import pg_dev as dev

    where = directory or Path(ctx.obj().home) / "postgres"
    if stop:
        if not dev.stop(where):
            raise InvalidInput(f"no local Postgres in {where}")
        console.print(f"stopped the Postgres server in {escape(str(where))}", highlight=False)
        return
    typer.echo(dev.start(where))


@bench_app.command("store")
def bench_store(
    ctx: typer.Context,
    memories: Annotated[int, typer.Option("--memories", min=1)] = 10_000,
    users: Annotated[int, typer.Option("--users", min=1)] = 10,
    queries: Annotated[int, typer.Option("--queries", min=1)] = 200,
    batch: Annotated[int, typer.Option("--batch", min=1)] = 1000,
    backend: Annotated[
        str,
        typer.Option("--backend", help="chroma or exact (SQLite), postgres (pgvector), or all (the three in one run)"),
    ] = "chroma",
    url: Annotated[
        str | None,
        typer.Option("--url", help="postgres: this database (default: a private server, deleted afterwards)."),
    ] = None,
    compare: Annotated[
        str,
        typer.Option(
            "--compare",
            help="Peers on the same data, comma-separated: langgraph, chroma (or all: those two), mem0 (opt-in, "
            "not in all: it adds one memory at a time, tens per second; needs the mem0 extra).",
        ),
    ] = "",
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG of search p50/p95 per system.")] = None,
    keep: Annotated[Path | None, typer.Option("--keep", help="Build the stores here (default: a temp dir).")] = None,
    as_json: Json = False,
) -> None:
    """Add throughput against the embedding model alone, scoped search latency (with and without the query
    embedding), peak RSS; with --compare, other stores on the same data and query vectors."""
    from memory_store.bench import ENGINES, run_store_bench
    from memory_store.bench_compare import KNOWN, PEERS

    backends = list(ENGINES) if backend == "all" else [backend]
    if any(b not in ENGINES for b in backends):
        raise InvalidInput("--backend must be chroma, exact, postgres or all")
    if url is not None and "postgres" not in backends:
        raise InvalidInput("--url is for --backend postgres (or all)")
    named = [p.strip() for p in compare.split(",") if p.strip()]
    peers = list(dict.fromkeys(q for p in named for q in (PEERS if p == "all" else (p,))))  # "all,mem0" works
    unknown = [p for p in peers if p not in KNOWN]
    if unknown:
        raise InvalidInput(f"--compare: unknown {', '.join(unknown)} (choose from {', '.join(KNOWN)}, or all)")
    try:
        result = run_store_bench(
            ctx.obj().store,
            memories=memories,
            users=users,
            queries=queries,
            batch=batch,
            backend=backends,
            keep=keep,
            progress=not as_json,
            url=url,
            compare=peers,
            plot=plot,
        )
    except OSError as exc:
        raise StoreError(f"benchmark failed: {exc}") from exc
    except RuntimeError as exc:  # a peer's library is missing
        raise InvalidInput(str(exc)) from None
    if as_json:
        emit(result)
        return

    def cell(v: object) -> str:
        return f"{v:,.2f}" if isinstance(v, float) else str(v)

    engines: dict = result["engines"]  # type: ignore[assignment]
    title = (
        f"mark bench store ({memories:,} memories, {users} users; embedder alone {result['embed_per_second']:,.1f}/s)"
    )
    table = Table("metric", *engines, title=title)
    for k in next(iter(engines.values())):
        table.add_row(k, *(cell(r[k]) for r in engines.values()))
    console.print(table)
    peers_out: dict = result["compare"]  # type: ignore[assignment]
    if peers_out:
        side = Table(
            "system", "search p50 ms", "search p95 ms", "load /s (vectors given)", title="same data, side by side"
        )
        for name, r in engines.items():
            side.add_row(
                f"mark {name}",
                cell(r["search_p50_ms_without_embedding"]),
                cell(r["search_p95_ms_without_embedding"]),
                "",
            )
        for r in peers_out.values():
            side.add_row(
                r["what"],
                cell(r["search_p50_ms_without_embedding"]),
                cell(r["search_p95_ms_without_embedding"]),
                cell(r["load_per_second_vectors_given"]),
            )
        console.print(side)
    for k, v in result["ratios"].items():  # type: ignore[union-attr]
        console.print(f"{k}: {v:.2f}", highlight=False)
    console.print(f"peak RSS {result['peak_rss_mb']:,.0f} MB", highlight=False)
    if "plot" in result:
        console.print(f"plot: {escape(str(result['plot']))}", highlight=False)
