"""`mark bench extraction`: how well a memory model's notes keep the facts of a labelled set of exchanges.

The set (``tests/data/extraction_set.json`` in a checkout, or ``--set``) holds short exchanges from the dev
data, each with the notes a careful person would write: one fact per note, each fact with its key tokens. The
real builder extracts notes from every exchange (:meth:`MemoryBuilder.extract_notes`: the prompt, the model,
then ``_clean``'s post-processing; nothing is stored), and :func:`score` compares them with the labels:

- fact coverage: the share of labelled facts whose key tokens all appear in some note;
- one fact per note: the share of notes that hold at most one labelled fact;
- unmatched notes: the share of notes that match no labelled fact, required or optional (precision, roughly);
- third person: the share of notes with no first- or second-person word ("I", "my", "you" ...);
- quiet: the share of exchanges with nothing worth remembering that got no note beyond the optional ones;
- exchanges per minute: extraction calls only (after one untimed warm-up call).

Key matching is deliberately plain: lower-cased words, alternatives separated by ``|``, each matched at a word
start ("danc" covers dance, dancer, dancing). Figures depend on the machine and are reported with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import platform
import re
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from mark_agents.config import LLMSettings, Settings
from memory_store import InvalidInput, Turn
from memory_store.atomic import save_figure

FACT_TYPES = ("user", "assistant", "correction")
_WORDS = re.compile(r"[a-z0-9]+")
_NOT_THIRD_PERSON = re.compile(
    r"\b(i|i'm|i've|i'd|i'll|me|my|mine|myself|we|we're|we've|our|ours|us|you|you're|you've|your|yours|yourself)\b"
)


# -- the labelled set ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledFact:
    text: str
    #: Every key must appear in a note for the note to hold the fact; a key lists alternatives ("lost|los").
    keys: tuple[str, ...]
    type: str = "user"


@dataclass(frozen=True)
class Exchange:
    id: str
    messages: tuple[tuple[str, str], ...]  # (role, content)
    facts: tuple[LabelledFact, ...] = ()
    #: Facts a note may hold without being counted as unmatched, but that no note has to hold.
    optional: tuple[LabelledFact, ...] = ()
    tags: tuple[str, ...] = ()
    source: str = ""


def default_set_path() -> Path:
    """The labelled set of a source checkout (it is test data, not shipped in the package)."""
    return Path(__file__).resolve().parents[1] / "tests" / "data" / "extraction_set.json"


def load_set(path: Path) -> list[Exchange]:
    """The exchanges of a labelled set file; a missing or malformed file is bad input (one line, exit 2)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidInput(f"no labelled extraction set at {path} (pass --set FILE)") from None
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read the labelled extraction set {path}: {exc}") from None
    try:
        exchanges = [_exchange(raw) for raw in data["exchanges"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"{path} is not a labelled extraction set: {exc!r}") from None
    if not exchanges:
        raise InvalidInput(f"{path} holds no exchanges")
    return exchanges


def _fact(raw: dict[str, Any]) -> LabelledFact:
    keys = tuple(str(k) for k in raw["keys"])
    if not keys or not all(_WORDS.search(k.lower()) for k in keys):
        raise ValueError(f"fact {raw.get('text')!r} needs keys with words in them")
    kind = raw.get("type", "user")
    if kind not in FACT_TYPES:
        raise ValueError(f"fact type {kind!r} is not one of {FACT_TYPES}")
    return LabelledFact(text=str(raw["text"]), keys=keys, type=kind)


def _exchange(raw: dict[str, Any]) -> Exchange:
    messages = tuple((str(m["role"]), str(m["content"])) for m in raw["messages"])
    if not messages or any(role not in ("user", "assistant") for role, _ in messages):
        raise ValueError(f"exchange {raw.get('id')!r} needs user/assistant messages")
    return Exchange(
        id=str(raw["id"]),
        messages=messages,
        facts=tuple(_fact(f) for f in raw.get("facts", [])),
        optional=tuple(_fact(f) for f in raw.get("optional", [])),
        tags=tuple(raw.get("tags", [])),
        source=str(raw.get("source", "")),
    )


# -- scoring (pure) ----------------------------------------------------------------------------------------


def normalize(text: str) -> str:
    """Lower-cased words joined by single spaces, padded with one space on each side."""
    return " " + " ".join(_WORDS.findall(text.lower())) + " "


def key_matches(key: str, normalized_note: str) -> bool:
    """One alternative of the key appears in the note at a word start."""
    return any((" " + " ".join(_WORDS.findall(alt.lower()))) in normalized_note for alt in key.split("|"))


def covers(fact: LabelledFact, note: str) -> bool:
    """The note holds the fact: every key of the fact appears in it."""
    normalized = normalize(note)
    return all(key_matches(k, normalized) for k in fact.keys)


def is_third_person(note: str) -> bool:
    """No first- or second-person word: a note about the user, not the user's (or the assistant's) sentence."""
    return not _NOT_THIRD_PERSON.search(note.lower().replace("’", "'"))


@dataclass
class ExtractionResult:
    """What the builder gave for one exchange: its notes (after cleaning), what it dropped, and how long it took."""

    id: str
    notes: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: str | None = None


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def score(exchanges: list[Exchange], results: list[ExtractionResult]) -> dict[str, Any]:
    """The metrics of one model's notes against the labels (see the module docstring), with per-exchange detail."""
    by_id = {r.id: r for r in results}
    facts = covered = notes_total = single = unmatched = third = 0
    quiet_total = quiet_ok = 0
    per_type = {t: [0, 0] for t in FACT_TYPES}  # type -> [covered, total]
    per_tag: dict[str, list[int]] = {}
    details = []
    for ex in exchanges:
        result = by_id.get(ex.id) or ExtractionResult(id=ex.id, error="not run")
        hits = [[i for i, f in enumerate(ex.facts) if covers(f, note)] for note in result.notes]
        optional = [any(covers(f, note) for f in ex.optional) for note in result.notes]
        got = {i for h in hits for i in h}
        for i, fact in enumerate(ex.facts):
            per_type[fact.type][0] += i in got
            per_type[fact.type][1] += 1
        for tag in ex.tags:
            counts = per_tag.setdefault(tag, [0, 0])
            counts[0] += len(got)
            counts[1] += len(ex.facts)
        facts += len(ex.facts)
        covered += len(got)
        notes_total += len(result.notes)
        single += sum(len(h) <= 1 for h in hits)
        stray = [not h and not o for h, o in zip(hits, optional, strict=True)]
        unmatched += sum(stray)
        third += sum(is_third_person(n) for n in result.notes)
        if not ex.facts:
            quiet_total += 1
            quiet_ok += not any(stray)
        details.append(
            {
                "id": ex.id,
                "notes": [
                    {"kind": k, "text": n, "facts": h, "optional": o, "unmatched": s}
                    for n, k, h, o, s in zip(result.notes, result.kinds, hits, optional, stray, strict=True)
                ],
                "missed": [f.text for i, f in enumerate(ex.facts) if i not in got],
                "skipped": result.skipped,
                "seconds": round(result.seconds, 2),
                "error": result.error,
            }
        )
    timed = [r for r in results if r.error is None]
    seconds = sum(r.seconds for r in timed)
    return {
        "exchanges": len(exchanges),
        "facts": facts,
        "notes": notes_total,
        "fact_coverage": _share(covered, facts),
        "coverage_by_type": {t: _share(c, n) for t, (c, n) in per_type.items() if n},
        "facts_by_type": {t: n for t, (_, n) in per_type.items() if n},
        "coverage_by_tag": {t: _share(c, n) for t, (c, n) in sorted(per_tag.items()) if n},
        "one_fact_per_note": _share(single, notes_total),
        "unmatched_notes": _share(unmatched, notes_total),
        "third_person": _share(third, notes_total),
        "quiet": _share(quiet_ok, quiet_total),
        "quiet_exchanges": quiet_total,
        "notes_per_exchange": notes_total / len(exchanges) if exchanges else 0.0,
        "errors": sum(r.error is not None for r in results),
        "exchanges_per_min": len(timed) / seconds * 60 if seconds else None,
        "s_per_exchange_p50": statistics.median([r.seconds for r in timed]) if timed else None,
        "prompt_tokens_mean": statistics.fmean([r.prompt_tokens for r in timed]) if timed else None,
        "completion_tokens_mean": statistics.fmean([r.completion_tokens for r in timed]) if timed else None,
        "details": details,
    }


# -- running the real builder --------------------------------------------------------------------------------


def memory_settings_for(settings: Settings, model: str | None) -> Settings:
    """The settings whose memory model is ``model``: a bundled model's name or a GGUF file (None = as configured)."""
    if model is None:
        return settings
    base = settings.memory.model_dump(exclude={"base_url", "api_key", "model", "local_model", "local_model_path"})
    path = Path(model).expanduser()
    if model.endswith(".gguf") or path.is_file():
        if not path.is_file():
            raise InvalidInput(f"no GGUF file at {path}")
        llm = LLMSettings(**base, local_model_path=path.resolve())
    else:
        try:
            llm = LLMSettings(**base, local_model=model)
        except ValueError as exc:
            raise InvalidInput(f"--local-model {model!r} is not valid: {_first_error(exc)}") from None
    return settings.model_copy(update={"memory_llm": llm})


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    return str(errors()[0].get("msg")) if callable(errors) else str(exc)


def model_label(settings: Settings) -> str:
    """How a result names its memory model: the endpoint's model name, or the local model's."""
    from mark_agents.local_llm import local_model_name

    memory = settings.memory
    return local_model_name(memory) if memory.is_local else f"{memory.model} @ {memory.base_url}"


def _turns(ex: Exchange, user_id: str) -> list[Turn]:
    now = datetime.now(UTC)
    return [
        Turn(id=f"{ex.id}-{i}", user_id=user_id, session_id=ex.id, role=role, content=content, created_at=now)
        for i, (role, content) in enumerate(ex.messages)
    ]


async def extract_all(
    settings: Settings, exchanges: list[Exchange], progress: Progress | None = None, store: Any = None
) -> tuple[list[ExtractionResult], dict[str, Any]]:
    """Run the builder's extraction with ``settings.memory`` over every exchange (an empty scratch store, so no
    exchange sees another's notes). Starts the embedded server if needed and stops it after if it started it."""
    from mark_agents.builder import MemoryBuilder
    from mark_agents.llm import LLMError, connect
    from memory_store import MemoryStore

    memory = settings.memory
    server = None
    was_running = True
    if memory.is_local:
        from mark_agents.local_llm import LocalServer

        server = LocalServer(memory, settings.models_dir)
        was_running = server.status().running
    with contextlib.ExitStack() as stack:
        if store is None:
            home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mark-bench-extraction-")))
            store = MemoryStore(settings.store.model_copy(update={"home": home}))
            stack.callback(store.close)
        started = time.perf_counter()
        llm = await connect(memory, settings.models_dir)
        info: dict[str, Any] = {
            "model": model_label(settings),
            "endpoint": llm.base_url,
            "connect_s": round(time.perf_counter() - started, 1),
            "server_started_for_bench": not was_running,
        }
        try:
            builder = MemoryBuilder(store, llm, settings.agent)
            with contextlib.suppress(LLMError):  # warm-up: the system prompt's first prefill is not timed
                await builder.extract_notes(_turns(exchanges[0], "bench-extraction-warmup"))
            task = progress.add_task(f"extraction with {info['model']}", total=len(exchanges)) if progress else None
            results = []
            for n, ex in enumerate(exchanges):
                result = ExtractionResult(id=ex.id)
                t = time.perf_counter()
                try:
                    notes, report = await builder.extract_notes(_turns(ex, f"bench-extraction-{n}"))
                except LLMError as exc:
                    result.error = str(exc)
                else:
                    result.notes = [note.text for note in notes]
                    result.kinds = [note.kind for note in notes]
                    result.skipped = list(report.skipped)
                    result.prompt_tokens = report.usage.prompt_tokens
                    result.completion_tokens = report.usage.completion_tokens
                result.seconds = time.perf_counter() - t
                results.append(result)
                if progress is not None:
                    progress.advance(task)
        finally:
            await llm.aclose()
            if server is not None and not was_running:
                await asyncio.to_thread(server.stop)
    return results, info


def run_extraction_bench(
    settings: Settings,
    exchanges: list[Exchange],
    models: list[str | None],
    *,
    set_path: Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score each memory model (``None`` = the configured one) on the set, one after the other."""
    runs = []
    console = Console(stderr=True)
    columns = ("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, disable=not progress) as bar:
        for model in models:
            model_settings = memory_settings_for(settings, model)
            results, info = asyncio.run(extract_all(model_settings, exchanges, bar))
            runs.append({**info, **score(exchanges, results)})
    return {
        "set": str(set_path) if set_path else None,
        "machine": machine(),
        "runs": runs,
    }


def machine() -> dict[str, Any]:
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count()
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": cpus,
        "python": platform.python_version(),
    }


# -- output ---------------------------------------------------------------------------------------------------

#: (label, key, format) of the table's rows; None values print as "-".
_ROWS = [
    ("fact coverage", "fact_coverage", "pct"),
    ("  user facts", ("coverage_by_type", "user"), "pct"),
    ("  assistant recommendations", ("coverage_by_type", "assistant"), "pct"),
    ("  corrections", ("coverage_by_type", "correction"), "pct"),
    ("  two-fact exchanges", ("coverage_by_tag", "two-fact"), "pct"),
    ("one fact per note", "one_fact_per_note", "pct"),
    ("unmatched notes (lower is better)", "unmatched_notes", "pct"),
    ("third person", "third_person", "pct"),
    ("quiet on nothing-to-remember", "quiet", "pct"),
    ("notes per exchange", "notes_per_exchange", "num"),
    ("exchanges per minute", "exchanges_per_min", "num"),
    ("seconds per exchange (p50)", "s_per_exchange_p50", "num"),
    ("prompt / completion tokens", ("tokens",), "tokens"),
    ("failed extractions", "errors", "int"),
]


def _value(run: dict[str, Any], key: Any) -> Any:
    if isinstance(key, tuple):
        if key == ("tokens",):
            return (run.get("prompt_tokens_mean"), run.get("completion_tokens_mean"))
        return run.get(key[0], {}).get(key[1])
    return run.get(key)


def _fmt(value: Any, kind: str) -> str:
    if kind == "tokens":
        p, c = value
        return "-" if p is None else f"{p:.0f} / {c:.0f}"
    if value is None:
        return "-"
    if kind == "pct":
        return f"{value * 100:.1f}%"
    if kind == "int":
        return str(value)
    return f"{value:.1f}"


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """The comparison table as text cells: one row per measure, one column per model."""
    return [[label] + [_fmt(_value(run, key), kind) for run in result["runs"]] for label, key, kind in _ROWS]


def render(result: dict[str, Any], console: Console) -> None:
    runs = result["runs"]
    m = result["machine"]
    first = runs[0] if runs else {}
    table = Table(
        title=f"Extraction on {first.get('exchanges', 0)} labelled exchanges ({first.get('facts', 0)} facts); "
        f"{m['cpus']} CPUs, {m['machine']}"
    )
    table.add_column("measure")
    for run in runs:
        table.add_column(run["model"], justify="right")
    for row in table_rows(result):
        table.add_row(*row)
    console.print(table)


def markdown_table(result: dict[str, Any]) -> str:
    """The same table in Markdown, for the README."""
    head = "| measure | " + " | ".join(run["model"] for run in result["runs"]) + " |"
    rule = "|---|" + "---|" * len(result["runs"])
    return "\n".join([head, rule, *("| " + " | ".join(row) + " |" for row in table_rows(result))])


def plot(result: dict[str, Any], path: Path) -> Path:
    """PNG: the quality measures per model (bars), and exchanges per minute beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = [
        ("coverage", "fact_coverage"),
        ("one fact\nper note", "one_fact_per_note"),
        ("matched\nnotes", "unmatched_notes"),
        ("third\nperson", "third_person"),
        ("quiet", "quiet"),
    ]
    runs = result["runs"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [4, 1]})
    width = 0.8 / max(1, len(runs))
    for i, run in enumerate(runs):
        values = []
        for _, key in measures:
            v = run.get(key)
            if key == "unmatched_notes" and v is not None:
                v = 1 - v
            values.append(0.0 if v is None else v * 100)
        xs = [x + i * width for x in range(len(measures))]
        bars = left.bar(xs, values, width, label=run["model"])
        left.bar_label(bars, fmt="%.0f", fontsize=7)
        speed = right.bar([i], [run.get("exchanges_per_min") or 0.0], 0.6, label=run["model"])
        right.bar_label(speed, fmt="%.1f", fontsize=8)
    left.set_xticks([x + width * (len(runs) - 1) / 2 for x in range(len(measures))], [m for m, _ in measures])
    left.set_ylabel("% (higher is better)")
    left.set_ylim(0, 110)
    left.legend(fontsize=8, loc="lower right")
    first = runs[0] if runs else {}
    left.set_title(f"Notes vs labels: {first.get('exchanges', 0)} exchanges, {first.get('facts', 0)} facts")
    right.set_xticks(range(len(runs)), [r["model"].replace("qwen2.5-coder-", "") for r in runs], fontsize=8)
    right.set_title(f"exchanges/min ({result['machine']['cpus']} CPUs)")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
