"""Root of the `mark` CLI.

Each package owns its sub-commands (``memory_store.cli``, ``mark_agents.cli``, ``mark_eval.cli``);
this module composes them, builds the one settings object from ``--home`` and the environment, and turns
every :class:`~memory_store.errors.MarkError` into one clear line on stderr and its exit code. An error nobody
foresaw is one line too, with a hint: ``MARK_DEBUG=1`` shows its traceback.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from memory_store.errors import MarkError


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _fail(message: str, code: int) -> NoReturn:
    typer.secho(f"error: {_one_line(message)}", err=True, fg="red")
    raise typer.Exit(code)


def _describe_os_error(err: OSError) -> str:
    """An environment problem (disk full, read-only, no permission) in words, with the file it concerns."""
    what = err.strerror or str(err) or type(err).__name__
    where = f": {err.filename}" if err.filename else ""
    return f"{what[:1].lower()}{what[1:]}{where}"


class _Root(TyperGroup):
    """The root command: whatever a sub-command raises ends as one line on stderr and an exit code."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):  # typer's own: usage errors, exits, Ctrl-C
            raise
        except MarkError as err:
            _fail(str(err) or type(err).__name__, err.exit_code)
        except OSError as err:  # the machine, not the input: a full disk, a read-only or missing directory
            _fail(_describe_os_error(err), 1)
        except Exception as err:
            if os.environ.get("MARK_DEBUG", "") not in ("", "0"):
                raise
            kind = "database error" if isinstance(err, sqlite3.Error) else f"unexpected {type(err).__name__}"
            _fail(f"{kind}: {str(err) or 'no details'} (set MARK_DEBUG=1 to see the traceback)", 1)


app = typer.Typer(
    cls=_Root,
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
    ctx.obj = _settings_factory(home)


def _settings_factory(home: Path | None):
    """Settings are built lazily, so `--help` never touches the disk; every command reads `ctx.obj()`, which
    carries ``--home`` down (the environment is never written)."""
    cache: dict[str, object] = {}

    def build():
        if "s" not in cache:
            from mark_cli.settings import build_settings

            cache["s"] = build_settings(home)
        return cache["s"]

    return build


def _register() -> None:
    from memory_store.cli import bench_app, memory_app

    app.add_typer(memory_app, name="memory", help="Add, search, list, export and purge memories.")
    app.add_typer(bench_app, name="bench", help="Benchmarks (throughput, latency, tokens).")
    from mark_agents.cli import register as register_agents
    from mark_eval.cli import register as register_eval

    register_agents(app, bench_app)
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
