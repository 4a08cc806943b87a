"""PNG plots: accuracy (with 95% error bars) and input tokens against conversation count, one line per method,
one panel per (category, evidence count), with ConvoMem's published figures (Gemini 2.5 Flash) dashed beside ours."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from mark_eval.convomem.anchors import PLOT_MODEL, matching
from mark_eval.convomem.summary import SummaryRow, judge_label
from memory_store.atomic import write_with

#: taci_tree is an unreleased experiment in ConvoMem's results (collapses to ~0 %); not a baseline.
IGNORED_ANCHOR_METHODS = frozenset({"taci_tree"})


_MARKERS = ["o", "s", "^", "D", "v", "P", "*", "X"]


def _figure(panels: int):  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, panels)
    rows = math.ceil(panels / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.8 * rows), squeeze=False)
    return plt, fig, [ax for line in axes for ax in line]


def _error_bars(ax, xs: list[int], ys: list, rows: list[SummaryRow], color: str) -> None:  # type: ignore[no-untyped-def]
    """95% Wilson intervals of the accuracy at each size (ConvoMem's CSVs give none; ours do)."""
    low = [y - (r.ci95_low_percent if r.ci95_low_percent is not None else y) for y, r in zip(ys, rows, strict=True)]
    high = [(r.ci95_high_percent if r.ci95_high_percent is not None else y) - y for y, r in zip(ys, rows, strict=True)]
    ax.errorbar(xs, ys, yerr=[low, high], fmt="none", ecolor=color, capsize=3, alpha=0.6)


def plot_metric(summary: list[SummaryRow], path: Path, metric: str) -> Path | None:
    """``metric`` is ``accuracy`` or ``input_tokens``. Returns the path written, or None if nothing to plot."""
    panels: dict[tuple[str, int], list[SummaryRow]] = defaultdict(list)
    for row in summary:
        value = row.success_rate_percent if metric == "accuracy" else row.avg_input_tokens
        if value is not None:
            panels[(row.category, row.evidence_count)].append(row)
    if not panels:
        return None
    plt, fig, axes = _figure(len(panels))
    for ax, ((category, ev), rows) in zip(axes, sorted(panels.items()), strict=False):
        by_method: dict[str, list[SummaryRow]] = defaultdict(list)
        for row in rows:
            by_method[row.method].append(row)
        # Methods often coincide (hybrid is full context while the history fits): draw the first ones wider,
        # with their own markers, so a line drawn later never hides one drawn earlier.
        for n, (method, mrows) in enumerate(sorted(by_method.items())):
            mrows.sort(key=lambda r: r.context_size)
            ys = [r.success_rate_percent if metric == "accuracy" else r.avg_input_tokens for r in mrows]
            xs = [r.context_size for r in mrows]
            (drawn,) = ax.plot(
                xs,
                ys,
                marker=_MARKERS[n % len(_MARKERS)],
                linewidth=max(1.0, 4.0 - n * 0.7),
                markersize=max(4.0, 10.0 - n * 1.5),
                alpha=0.85,
                label=f"ours: {method}",
            )
            if metric == "accuracy":
                _error_bars(ax, xs, ys, mrows, drawn.get_color())
        sizes = {r.context_size for r in rows}
        anchors: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for a in matching(category, ev, sizes):
            if a.method in IGNORED_ANCHOR_METHODS:
                continue
            value = a.accuracy_percent if metric == "accuracy" else a.avg_input_tokens
            if value is not None:
                anchors[f"{a.method} ({a.evidence_count}-ev)"].append((a.context_size, value))
        for label, points in sorted(anchors.items()):
            points.sort()
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                linestyle="--",
                marker="x",
                alpha=0.7,
                label=f"ConvoMem {PLOT_MODEL.replace('gemini_2_5_', '')}: {label}",
            )
        ax.set_xscale("log")
        ticks = sorted(sizes)
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(t) for t in ticks], fontsize=7)
        ax.minorticks_off()
        if metric == "accuracy":
            ax.set_ylim(0, 102)
            ax.set_ylabel("accuracy (%)")
        else:
            ax.set_yscale("log")
            ax.set_ylabel("input tokens / question")
        ax.set_xlabel("conversations in history")
        ax.set_title(f"{category} ({ev}-evidence)" if ev else category)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(f"ours: {judge_label(summary)}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98 if len(axes) > 3 else 0.94))
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


def write_plots(summary: list[SummaryRow], out_dir: Path) -> list[Path]:
    written = []
    for metric, name in [("accuracy", "accuracy.png"), ("input_tokens", "input_tokens.png")]:
        path = plot_metric(summary, out_dir / name, metric)
        if path is not None:
            written.append(path)
    return written
