"""Root of the `mark` CLI.

Each package owns its sub-commands (``memory_store.cli``, ``mark_agents.cli``, ``mark_eval.cli``);
this module composes them, builds the one settings object from ``--home`` and the environment, and turns
every :class:`~memory_store.errors.MarkError` into one clear line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from memory_store.errors import MarkError

app = typer.Typer(
    name="mark",
    help="Long-term memory for chatbots: MARK agents, a vector+SQL memory store, a ConvoMem evaluator.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option("--home", help="Data directory (default: $MARK_HOME or the user data dir).", show_default=False),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details to stderr.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if home is not None:
        os.environ["MARK_HOME"] = str(home)
    ctx.obj = _settings_factory(home)


def _settings_factory(home: Path | None):
    """Settings are built lazily, so `--help` never touches the disk; every command reads `ctx.obj()`."""
    cache: dict[str, object] = {}

    def build():
        if "s" not in cache:
            try:
                from mark_agents.config import Settings
            except ImportError:  # the agents package is optional for store-only users
                from memory_store.config import StoreSettings as Settings
            kwargs = {"home": home} if home is not None else {}
            cache["s"] = Settings(**kwargs)
        return cache["s"]

    return build


def _register() -> None:
    from memory_store.cli import bench_app, memory_app

    app.add_typer(memory_app, name="memory", help="Add, search, list, export and purge memories.")
    app.add_typer(bench_app, name="bench", help="Benchmarks (throughput, latency, tokens).")
    try:
        from mark_agents.cli import register as register_agents
    except ImportError:
        pass
    else:
        register_agents(app, bench_app)
    try:
        from mark_eval.cli import register as register_eval
    except ImportError:
        pass
    else:
        register_eval(app, bench_app)


_register()


def main() -> None:
    try:
        app()
    except MarkError as err:
        typer.secho(f"error: {err}", err=True, fg="red")
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
