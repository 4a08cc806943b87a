"""``locomo.png``: per-category bars of each method (J accuracy with 95% error bars when answers were judged,
else evidence recall), and our headline J beside the published figures, each labelled with its answer model."""

from __future__ import annotations

from pathlib import Path

from mark_eval.locomo.anchors import j_anchors
from mark_eval.locomo.categories import ADVERSARIAL, HEADLINE, OVERALL
from mark_eval.locomo.summary import LocomoSummaryRow
from memory_store.atomic import write_with

_PANEL_ORDER = (OVERALL, *HEADLINE, ADVERSARIAL)


def _label(category: str) -> str:
    return "overall (1-4)" if category == OVERALL else category.replace("_", " ")


def write_plot(summary: list[LocomoSummaryRow], out_dir: Path) -> Path | None:
    if not summary:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    judged = any(r.j_percent is not None for r in summary)
    metric = "J accuracy (%)" if judged else "evidence recall (%)"
    methods = sorted({r.method for r in summary})
    categories = [c for c in _PANEL_ORDER if any(r.category == c for r in summary)]
    panels = 2 if judged else 1
    ratios = [1.0, 1.3] if judged else [1.0]
    fig, axes = plt.subplots(
        1, panels, figsize=(7.5 * sum(ratios), 4.8), squeeze=False, gridspec_kw={"width_ratios": ratios}
    )
    ax = axes[0][0]
    width = 0.8 / max(1, len(methods))
    for m, method in enumerate(methods):
        rows = {r.category: r for r in summary if r.method == method}
        xs, ys, lo, hi = [], [], [], []
        for c, category in enumerate(categories):
            row = rows.get(category)
            value = None if row is None else (row.j_percent if judged else row.evidence_recall_percent)
            if value is None or row is None:
                continue
            xs.append(c + (m - (len(methods) - 1) / 2) * width)
            ys.append(value)
            low = row.ci95_low_percent if judged and row.ci95_low_percent is not None else value
            high = row.ci95_high_percent if judged and row.ci95_high_percent is not None else value
            lo.append(value - low)
            hi.append(high - value)
        ax.bar(xs, ys, width=width, label=method, yerr=[lo, hi] if judged else None, capsize=3)
    ax.set_xticks(range(len(categories)))
    ax.set_xticklabels([_label(c) for c in categories], fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_ylabel(metric)
    ax.set_title(f"ours by category: {metric}", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    if judged:
        _anchor_panel(axes[0][1], summary)
    fig.tight_layout()
    path = out_dir / "locomo.png"
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return path


def _anchor_panel(ax, summary: list[LocomoSummaryRow]) -> None:  # type: ignore[no-untyped-def]
    """Horizontal bars: our headline J per method (with its CI) among the published overall J figures."""
    bars: list[tuple[str, float, float, float, bool]] = []
    for r in summary:
        if r.category == OVERALL and r.j_percent is not None:
            judge = r.judge.split(":", 1)[-1] if ":" in r.judge else r.judge
            low = r.ci95_low_percent if r.ci95_low_percent is not None else r.j_percent
            high = r.ci95_high_percent if r.ci95_high_percent is not None else r.j_percent
            label = f"ours: {r.method} ({r.answer_model or 'answer model ?'}; judge {judge})"
            bars.append((label, r.j_percent, low, high, True))
    for a in j_anchors():
        bars.append((f"{a.system} ({a.model_label})", a.score, a.score, a.score, False))
    bars.sort(key=lambda b: b[1])
    ys = range(len(bars))
    for y, (_, value, low, high, ours) in zip(ys, bars, strict=True):
        ax.barh(
            y,
            value,
            xerr=[[value - low], [high - value]] if ours else None,
            color="tab:red" if ours else "tab:gray",
            capsize=3,
        )
    ax.set_yticks(list(ys))
    ax.set_yticklabels([b[0] for b in bars], fontsize=7)
    ax.set_xlim(0, 100)
    ax.set_xlabel("J accuracy, categories 1-4 (%)")
    ax.set_title("ours (red) beside published figures (grey; own answer models, prompts, judges)", fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
