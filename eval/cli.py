"""``mark eval ...`` and ``mark bench convomem``: the benchmarks' commands, composed into the root CLI."""

from __future__ import annotations

import typer


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add ``mark eval convomem``, ``mark eval locomo`` and ``mark bench convomem`` to the root CLI."""
    from mark_eval.convomem.cli import bench_command, convomem_command
    from mark_eval.locomo.cli import locomo_command

    eval_app = typer.Typer(help="Evaluate memory quality (ConvoMem, LoCoMo).", no_args_is_help=True)
    eval_app.command("convomem")(convomem_command)
    eval_app.command("locomo")(locomo_command)
    app.add_typer(eval_app, name="eval", help="Evaluate memory quality (ConvoMem and LoCoMo benchmarks).")
    bench_app.command("convomem")(bench_command)
