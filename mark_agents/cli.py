"""The agents' sub-commands of ``mark``; the root (mark_cli.main) composes them via :func:`register`.

Commands read settings with ``ctx.obj()`` (a lazy factory) and raise MarkError subclasses; the root prints
those on one line. Heavy imports happen inside the commands so ``mark --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from mark_agents.config import Settings

# -- mark llm ---------------------------------------------------------------------------------------------

llm_app = typer.Typer(no_args_is_help=True)


def _llm_settings(ctx: typer.Context, *, n_ctx: int | None = None, model: Path | None = None) -> Settings:
    """The settings with the command-line overrides of the local server applied."""
    settings: Settings = ctx.obj()
    update: dict[str, object] = {}
    if n_ctx is not None:
        update["local_n_ctx"] = n_ctx
    if model is not None:
        update["local_model_path"] = model.expanduser().resolve()
    if update:
        settings = settings.model_copy(update={"llm": settings.llm.model_copy(update=update)})
    return settings


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
    """Start the local model server (detached unless --foreground) and print its base URL."""
    from mark_agents.local_llm import LocalServer

    server = LocalServer(_llm_settings(ctx, n_ctx=n_ctx, model=model))
    if foreground:
        raise typer.Exit(server.serve_foreground())
    typer.echo(server.ensure_running())


@llm_app.command("status")
def llm_status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Show whether the local model server of this data directory runs, where, and with which model."""
    from mark_agents.local_llm import LocalServer

    status = LocalServer(ctx.obj()).status()
    if as_json:
        typer.echo(status.model_dump_json(indent=2))
        return
    if not status.running:
        typer.echo("not running")
        return
    typer.echo(f"running   {status.base_url}")
    typer.echo(f"pid       {status.pid}")
    typer.echo(f"model     {status.model_path}")
    typer.echo(f"n_ctx     {status.n_ctx}")
    typer.echo(f"uptime    {status.uptime_s or 0:.0f} s")


@llm_app.command("stop")
def llm_stop(ctx: typer.Context) -> None:
    """Stop the local model server of this data directory."""
    from mark_agents.local_llm import LocalServer

    typer.echo("stopped" if LocalServer(ctx.obj()).stop() else "not running")


# -- registration -------------------------------------------------------------------------------------------


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add the agents' commands to the root app (``bench_app`` receives the agents' benchmarks)."""
    app.add_typer(llm_app, name="llm", help="Run the embedded local model server.")
