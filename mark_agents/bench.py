"""`mark bench chat`: what memory costs a chatbot per turn, apart from the model.

Three measurements, each in a scratch store (a temp dir, or ``--keep DIR`` to reuse a built one):

(a) memory overhead per turn: ``ChatReply.memory_ms`` (recall + prompt assembly) of real ``MemoryAgent.achat``
    turns for a user with N memories (default 10,000). The LLM is a scripted in-process fake answering in
    microseconds, so model time is excluded by construction; background extraction is awaited between turns so
    it does not overlap the next turn's measurement. Direct ``recall()`` + ``build_messages`` timings are given
    too (no graph, no thread hop).
(b) background extraction throughput with the real memory model (``Settings.memory``: the configured
    endpoint or the embedded local server): exchanges per minute and tokens per extraction over a few short
    exchanges (``--no-llm`` skips it).
(c) input tokens per turn over a scripted conversation split into sessions: with memory (what the agent
    really sends: system prompt, memory block, the session's recent history, the message) against a no-memory
    baseline (the same without the memory block) and against sending the full history of every session.
    Extraction is scripted (each fact message yields its note), so the figures are deterministic.

Figures depend on the machine: they are reported with it.
"""

from __future__ import annotations

import asyncio
import os
import platform
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from mark_agents.agent import MemoryAgent
from mark_agents.config import Settings
from mark_agents.graph import build_messages
from mark_agents.llm import LLMError, estimate_message_tokens, estimate_tokens
from mark_agents.llm.scripted import RoleScript
from mark_agents.local_llm import local_model_name
from mark_agents.prompts import ANSWER_SYSTEM
from mark_agents.recall import recall
from memory_store import MemoryKind, MemoryStore, NewMemory
from memory_store.atomic import save_figure
from memory_store.bench import OBJECTS, SUBJECTS, sentence

OVERHEAD_USER = "bench-user"
EXTRACT_USER = "bench-extract"
CONVERSATION_USER = "bench-conversation"
P95_TARGET_MS = 50.0

#: Short exchanges for the extraction throughput (b): facts of the kinds MARK stores.
EXCHANGES: list[tuple[str, str]] = [
    ("My sister Ana lives in Porto.", "Nice, Porto is a lovely city."),
    ("I'm allergic to peanuts.", "Noted, I will keep that in mind."),
    ("Please keep your answers short.", "Sure."),
    ("I work night shifts as a nurse.", "That sounds demanding."),
    ("We adopted a cat called Miso last week.", "Congratulations on Miso!"),
    ("I moved from Denver to Lisbon in May.", "How are you finding Lisbon?"),
    ("I'm training for the Berlin marathon in September.", "Good luck with the training!"),
    ("I prefer metric units.", "Got it, metric it is."),
]


@dataclass
class Step:
    """One user message of the scripted conversation (c): the reply, the notes extraction yields, and for a
    question the word its answer needs (to check that recall brought the fact back)."""

    user: str
    reply: str = "OK."
    notes: list[str] = field(default_factory=list)
    needs: str | None = None


CONVERSATION: list[Step] = [
    Step("Hi! I just moved to Lisbon from Denver.", "Welcome to Lisbon!", ["The user lives in Lisbon."]),
    Step("My dog is called Biscuit.", "Biscuit is a great name.", ["The user has a dog named Biscuit."]),
    Step(
        "I work as a nurse, mostly night shifts.",
        "That is demanding work.",
        ["The user works night shifts as a nurse."],
    ),
    Step("Can you suggest a quick dinner?", "Try a tomato omelette: ten minutes, one pan."),
    Step("I'm allergic to peanuts.", "Noted: no peanuts.", ["The user is allergic to peanuts."]),
    Step("Please keep answers under three sentences.", "Will do.", ["The user wants answers under three sentences."]),
    Step("What's a good way to sleep after a night shift?", "Dark room, earplugs, same hours every day."),
    Step("My sister Ana visits next month.", "Nice, enjoy the visit.", ["The user's sister Ana visits next month."]),
    Step("I'm learning Portuguese on weekends.", "Boa sorte!", ["The user is learning Portuguese on weekends."]),
    Step("Thanks, that's all for today.", "Talk soon."),
    Step("Hello again. What's my dog's name?", "Your dog is Biscuit.", needs="Biscuit"),
    Step("Which snack should I avoid?", "Avoid peanuts: you are allergic.", needs="peanuts"),
    Step("I bought a road bike.", "Enjoy the rides!", ["The user bought a road bike."]),
    Step("Where do I live now?", "In Lisbon.", needs="Lisbon"),
    Step("Recommend a weekend activity.", "A bike ride along the Tagus river."),
    Step("My favourite food is bacalhau.", "A Lisbon classic.", ["The user's favourite food is bacalhau."]),
    Step("What job do I have?", "You are a nurse on night shifts.", needs="nurse"),
    Step("Who visits me next month?", "Your sister Ana.", needs="Ana"),
    Step("Give me a packing list for a day hike.", "Water, snacks without peanuts, a jacket, sunscreen."),
    Step("Good night.", "Good night!"),
    Step("Morning! I switched to day shifts.", "Good change.", ["The user now works day shifts as a nurse."]),
    Step("What language am I learning?", "Portuguese.", needs="Portuguese"),
    Step("Plan a dinner for my sister.", "Bacalhau à Brás, no peanuts anywhere."),
    Step("What's my favourite food?", "Bacalhau.", needs="bacalhau"),
    Step("I also started running on Sundays.", "Great habit.", ["The user runs on Sundays."]),
    Step("How long should a beginner run?", "Twenty to thirty minutes, easy pace."),
    Step("What bike did I buy?", "A road bike.", needs="road bike"),
    Step("Remind me what my dog is called.", "Biscuit.", needs="Biscuit"),
    Step("How should you format answers for me?", "Short: under three sentences.", needs="three sentences"),
    Step("Thanks, bye.", "Bye!"),
]


# -- a scripted in-process LLM (no server, microseconds per call) ---------------------------------------


def scripted_conversation(script: list[Step]) -> RoleScript:
    """The scripted LLM playing the conversation: each message's reply, and the notes its extraction yields.

    It keeps LLM time out of the overhead measurement and makes the token comparison deterministic; the real
    ``openai`` client and the agent's whole code path run (see :mod:`mark_agents.llm.scripted`).
    """
    by_message = {s.user: s for s in script}

    def extract(body: dict) -> str:
        notes = [n for said in RoleScript.said(body) if (step := by_message.get(said)) for n in step.notes]
        return RoleScript.notes(*[("user_question", n) for n in notes])

    def reply(body: dict) -> str:
        step = by_message.get(RoleScript.user_text(body))
        return step.reply if step else "OK."

    return RoleScript(extract=extract, reply=reply)


# -- helpers ----------------------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else 0.0


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": _pct(values, 50),
        "p95_ms": _pct(values, 95),
        "mean_ms": statistics.fmean(values) if values else 0.0,
        "max_ms": max(values, default=0.0),
    }


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _progress(console: Console, enabled: bool) -> Progress:
    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not enabled,
        transient=True,
    )


def _fill(store: MemoryStore, n: int, progress: Progress) -> float:
    """Give the overhead user n memories (reusing those already there); returns the seconds spent adding."""
    have = store.count(OVERHEAD_USER)
    if have >= n:
        return 0.0
    rng = random.Random(11)
    kinds = list(MemoryKind)
    items = [NewMemory(text=sentence(rng, i), user_id=OVERHEAD_USER, kind=kinds[i % 3]) for i in range(have, n)]
    task = progress.add_task(f"adding {len(items):,} memories", total=len(items))
    started = time.perf_counter()
    for start in range(0, len(items), 1000):
        store.add_many(items[start : start + 1000], actor="bench")
        progress.advance(task, min(1000, len(items) - start))
    return time.perf_counter() - started


def _fill_history(store: MemoryStore, n: int, progress: Progress) -> float:
    """Give the overhead user n earlier turns (episodes) over sessions of 20; returns the seconds spent adding."""
    have = store.history_size(OVERHEAD_USER)[0]
    if have >= n:
        return 0.0
    rng = random.Random(13)
    task = progress.add_task(f"adding {n - have:,} earlier turns", total=n - have)
    started = time.perf_counter()
    for start in range(have, n, 1000):
        rows = [
            {
                "user_id": OVERHEAD_USER,
                "session_id": f"history-{i // 20}",
                "role": "user" if i % 2 == 0 else "assistant",
                "content": sentence(rng, i) if i % 2 == 0 else f"I see. {sentence(rng, i + 7)}",
                "extraction_status": "done",
            }
            for i in range(start, min(n, start + 1000))
        ]
        store.add_turns(rows)
        progress.advance(task, len(rows))
    return time.perf_counter() - started


# -- (a) memory overhead ----------------------------------------------------------------------------------


async def measure_overhead(agent: MemoryAgent, queries: int, progress: Progress, *, warmup: int = 5) -> dict[str, Any]:
    rng = random.Random(5)
    texts = [
        f"What did I say about {rng.choice(OBJECTS)} and {rng.choice(SUBJECTS).lower()}? ({i})"
        for i in range(queries + warmup)
    ]
    memory_ms: list[float] = []
    turn_ms: list[float] = []
    recalled: list[int] = []
    block_tokens: list[int] = []
    task = progress.add_task("chat turns (scripted LLM)", total=len(texts))
    for i, text in enumerate(texts):
        t = time.perf_counter()
        reply = await agent.achat(OVERHEAD_USER, text, session_id=f"bench-{i // 20}")
        wall = (time.perf_counter() - t) * 1000
        await agent.aflush()  # background extraction must not overlap the next measurement
        progress.advance(task)
        if i < warmup:
            continue
        memory_ms.append(reply.memory_ms)
        turn_ms.append(wall)
        recalled.append(len(reply.memories))
    direct: list[float] = []
    cfg = agent.config
    for text in texts[warmup:]:
        t = time.perf_counter()
        found = recall(agent.store, text, OVERHEAD_USER, budget_tokens=cfg.recall_budget_tokens, limit=cfg.recall_limit)
        build_messages(found.text, [], text, history_budget=1500)
        direct.append((time.perf_counter() - t) * 1000)
        block_tokens.append(found.tokens)
    return {
        "memories": agent.store.count(OVERHEAD_USER),
        "history_turns": agent.store.history_size(OVERHEAD_USER)[0],
        "turns": len(memory_ms),
        "llm": "scripted in-process fake (LLM time excluded)",
        "memory_ms": _stats(memory_ms),
        "direct_recall_and_prompt_ms": _stats(direct),
        "whole_turn_with_fake_llm_ms": _stats(turn_ms),
        "memories_per_turn_mean": statistics.fmean(recalled) if recalled else 0.0,
        "memory_block_tokens_mean": statistics.fmean(block_tokens) if block_tokens else 0.0,
        "p95_target_ms": P95_TARGET_MS,
        "p95_within_target": _pct(memory_ms, 95) <= P95_TARGET_MS,
    }


# -- (b) extraction throughput with the real model --------------------------------------------------------


async def measure_extraction(
    settings: Settings, bench_settings: Settings, store: MemoryStore, exchanges: int, progress: Progress
) -> dict[str, Any]:
    from mark_agents.llm import connect

    server = None
    was_running = True
    memory = settings.memory
    if memory.is_local:
        from mark_agents.local_llm import LocalServer

        server = LocalServer(memory, settings.models_dir)
        was_running = server.status().running
    t = time.perf_counter()
    llm = await connect(memory, settings.models_dir)
    start_s = time.perf_counter() - t
    agent = MemoryAgent(bench_settings, llm=llm, store=store, owns_llm=True)
    pairs = [EXCHANGES[i % len(EXCHANGES)] for i in range(exchanges)]
    seconds: list[float] = []
    prompt_tokens: list[int] = []
    completion_tokens: list[int] = []
    calls: list[int] = []
    added = confirmed = superseded = 0
    errors: list[str] = []
    task = progress.add_task(f"extraction with {llm.base_url}", total=len(pairs))
    try:
        for user, assistant in pairs:
            t = time.perf_counter()
            result = await agent.aremember(
                [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
                EXTRACT_USER,
                session_id="extract",
            )
            seconds.append(time.perf_counter() - t)
            progress.advance(task)
            prompt_tokens.append(result.usage.prompt_tokens)
            completion_tokens.append(result.usage.completion_tokens)
            calls.append(result.usage.calls)
            if result.error:
                errors.append(result.error)
            for r in result.reports:
                added += len(r.added)
                confirmed += len(r.confirmed)
                superseded += len(r.superseded)
    finally:
        await agent.aclose()
        if server is not None and not was_running:
            await asyncio.to_thread(server.stop)
    total = sum(seconds)
    return {
        "endpoint": llm.base_url,
        "model": memory.model if not memory.is_local else f"embedded {local_model_name(memory)}",
        "server_started_for_bench": not was_running,
        "connect_s": start_s,
        "exchanges": len(pairs),
        "exchanges_per_min": len(pairs) / total * 60 if total else 0.0,
        "messages_per_min": 2 * len(pairs) / total * 60 if total else 0.0,
        "s_per_exchange_p50": float(np.median(seconds)) if seconds else 0.0,
        "s_per_exchange_max": max(seconds, default=0.0),
        "llm_calls_per_exchange": statistics.fmean(calls) if calls else 0.0,
        "prompt_tokens_per_extraction": statistics.fmean(prompt_tokens) if prompt_tokens else 0.0,
        "completion_tokens_per_extraction": statistics.fmean(completion_tokens) if completion_tokens else 0.0,
        "memories_added": added,
        "memories_confirmed": confirmed,
        "memories_superseded": superseded,
        "errors": errors,
        "stored_memories": [m.text for m in store.list(EXTRACT_USER, limit=100).items],
    }


# -- (c) input tokens per turn ------------------------------------------------------------------------------


async def measure_tokens(
    agent: MemoryAgent, brain: RoleScript, turns: int, session_turns: int, progress: Progress
) -> dict[str, Any]:
    steps = [CONVERSATION[i % len(CONVERSATION)] for i in range(turns)]
    memory: list[int] = []
    baseline: list[int] = []
    full: list[int] = []
    block: list[int] = []
    transcript: list[dict[str, str]] = []
    questions = found = 0
    task = progress.add_task("scripted conversation", total=len(steps))
    for i, step in enumerate(steps):
        reply = await agent.achat(CONVERSATION_USER, step.user, session_id=f"conversation-{i // session_turns}")
        await agent.aflush()  # the user's think time: this turn's notes are stored before the next turn
        progress.advance(task)
        sent = brain.calls("reply")[-1]["messages"]
        memory.append(estimate_message_tokens(sent))
        baseline.append(estimate_message_tokens([{"role": "system", "content": ANSWER_SYSTEM}, *sent[1:]]))
        full.append(
            estimate_message_tokens(
                [{"role": "system", "content": ANSWER_SYSTEM}, *transcript, {"role": "user", "content": step.user}]
            )
        )
        block.append(estimate_tokens(sent[0]["content"]) - estimate_tokens(ANSWER_SYSTEM))
        transcript += [{"role": "user", "content": step.user}, {"role": "assistant", "content": reply.reply}]
        if step.needs:
            questions += 1
            found += any(step.needs.lower() in m.text.lower() for m in reply.memories)
    return {
        "turns": len(steps),
        "session_turns": session_turns,
        "sessions": (len(steps) + session_turns - 1) // session_turns,
        "memory": memory,
        "baseline": baseline,
        "full_history": full,
        "memory_block": block,
        "totals": {"memory": sum(memory), "baseline": sum(baseline), "full_history": sum(full)},
        "mean": {
            k: statistics.fmean(v) for k, v in (("memory", memory), ("baseline", baseline), ("full_history", full))
        },
        "last_turn": {"memory": memory[-1], "baseline": baseline[-1], "full_history": full[-1]},
        "memory_vs_full_history": sum(memory) / sum(full) if full else 0.0,
        "questions": questions,
        "questions_with_fact_recalled": found,
        "extraction": "scripted (each fact message yields its note)",
        "estimate": "mark_agents.llm.estimate_message_tokens",
    }


def plot_tokens(tokens: dict[str, Any], path: Path) -> Path:
    """PNG: input tokens per turn, with memory vs full history vs no-memory baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(1, tokens["turns"] + 1))
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    ax.plot(x, tokens["full_history"], label="full history", color="tab:red")
    ax.plot(x, tokens["memory"], label="MARK memory (block + session window)", color="tab:blue")
    ax.plot(x, tokens["baseline"], label="no memory (session window only)", color="tab:gray", linestyle="--")
    for s in range(1, tokens["sessions"]):
        ax.axvline(s * tokens["session_turns"] + 0.5, color="black", alpha=0.15, linewidth=1)
    ax.set_xlabel("turn (vertical lines: new session)")
    ax.set_ylabel("input tokens (estimated)")
    ax.set_title("Input tokens per turn")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


# -- the whole bench ----------------------------------------------------------------------------------------


async def _run(
    settings: Settings,
    home: Path,
    *,
    memories: int,
    history_turns: int,
    queries: int,
    turns: int,
    session_turns: int,
    exchanges: int,
    use_llm: bool,
    console: Console,
    progress_on: bool,
) -> dict[str, Any]:
    bench_settings = settings.model_copy(update={"home": home})
    result: dict[str, Any] = {"machine": machine()}
    with _progress(console, progress_on) as progress:
        store = await asyncio.to_thread(MemoryStore, bench_settings.store)
        try:
            await asyncio.to_thread(store.embed, ["warm up"])
            result["add_seconds"] = await asyncio.to_thread(_fill, store, memories, progress)
            result["add_history_seconds"] = await asyncio.to_thread(_fill_history, store, history_turns, progress)
            brain = scripted_conversation(CONVERSATION)
            agent = MemoryAgent(bench_settings, llm=brain.client(), store=store, owns_llm=True)
            try:
                for user in (CONVERSATION_USER, EXTRACT_USER):  # a kept store: (b) and (c) start from nothing
                    await agent.apurge_user(user)
                result["overhead"] = await measure_overhead(agent, queries, progress)
                result["tokens"] = await measure_tokens(agent, brain, turns, session_turns, progress)
            finally:
                await agent.aclose()
            if use_llm:
                try:
                    result["extraction"] = await measure_extraction(
                        settings, bench_settings, store, exchanges, progress
                    )
                except LLMError as exc:
                    result["extraction"] = {"error": str(exc)}
            else:
                result["extraction"] = None
        finally:
            await asyncio.to_thread(store.close)
    return result


def run_chat_bench(
    settings: Settings,
    *,
    memories: int = 10_000,
    history_turns: int = 50_000,
    queries: int = 200,
    turns: int = 60,
    session_turns: int = 10,
    exchanges: int = 4,
    use_llm: bool = True,
    keep: Path | None = None,
    progress: bool = True,
    console: Console | None = None,
) -> dict[str, Any]:
    """Run (a), (c) and unless ``use_llm`` is False (b); returns a JSON-ready dict (see the module docstring)."""
    home = keep or Path(tempfile.mkdtemp(prefix="mark-bench-chat-"))
    try:
        result = asyncio.run(
            _run(
                settings,
                home,
                memories=memories,
                history_turns=history_turns,
                queries=queries,
                turns=turns,
                session_turns=session_turns,
                exchanges=exchanges,
                use_llm=use_llm,
                console=console or Console(stderr=True),
                progress_on=progress,
            )
        )
    finally:
        if keep is None:
            shutil.rmtree(home, ignore_errors=True)
    result["home"] = str(keep) if keep else "temporary"
    return result


def render(result: dict[str, Any], console: Console) -> None:
    """The result as rich tables: overhead, extraction, tokens."""
    from rich.table import Table

    o = result["overhead"]
    table = Table("metric", "value", title=f"mark bench chat · {result['machine']}", title_justify="left")
    table.add_row("memories of the user", f"{o['memories']:,} notes, {o.get('history_turns', 0):,} earlier turns")
    table.add_row("LLM for (a) and (c)", o["llm"])
    mm = o["memory_ms"]
    ok = "[green]ok[/]" if o["p95_within_target"] else "[red]over target[/]"
    table.add_row(
        "(a) memory overhead per turn (recall + prompt)",
        f"p50 {mm['p50_ms']:.1f} ms · p95 {mm['p95_ms']:.1f} ms ({ok}, target ≤ {o['p95_target_ms']:.0f}) "
        f"· max {mm['max_ms']:.1f} ms · {o['turns']} turns",
    )
    d = o["direct_recall_and_prompt_ms"]
    table.add_row("    recall() + build_messages, direct", f"p50 {d['p50_ms']:.1f} ms · p95 {d['p95_ms']:.1f} ms")
    w = o["whole_turn_with_fake_llm_ms"]
    table.add_row("    whole achat turn with the fake LLM", f"p50 {w['p50_ms']:.1f} ms · p95 {w['p95_ms']:.1f} ms")
    table.add_row(
        "    memories / block tokens per turn",
        f"{o['memories_per_turn_mean']:.1f} / {o['memory_block_tokens_mean']:.0f}",
    )
    e = result.get("extraction")
    if e is None:
        table.add_row("(b) extraction throughput", "skipped (--no-llm)")
    elif "error" in e:
        table.add_row("(b) extraction throughput", f"[red]failed: {e['error']}[/]")
    else:
        table.add_row(
            "(b) extraction throughput",
            f"{e['exchanges_per_min']:.1f} exchanges/min ({e['messages_per_min']:.1f} messages/min) · "
            f"{e['s_per_exchange_p50']:.1f} s per exchange (p50; max {e['s_per_exchange_max']:.1f} s) · "
            f"{e['exchanges']} exchanges",
        )
        table.add_row(
            "    tokens per extraction",
            f"{e['prompt_tokens_per_extraction']:.0f} in + {e['completion_tokens_per_extraction']:.0f} out · "
            f"{e['llm_calls_per_exchange']:.1f} calls",
        )
        table.add_row(
            "    memories",
            f"{e['memories_added']} added, {e['memories_confirmed']} confirmed, {e['memories_superseded']} superseded"
            + (f" · {len(e['errors'])} errors" if e["errors"] else ""),
        )
        table.add_row("    endpoint", f"{e['endpoint']} ({e['model']})")
    t = result["tokens"]
    table.add_row(
        "(c) input tokens per turn, mean",
        f"memory {t['mean']['memory']:.0f} · no memory {t['mean']['baseline']:.0f} · "
        f"full history {t['mean']['full_history']:.0f}",
    )
    table.add_row(
        "    at the last turn",
        f"memory {t['last_turn']['memory']} · no memory {t['last_turn']['baseline']} · "
        f"full history {t['last_turn']['full_history']}",
    )
    table.add_row(
        "    whole conversation",
        f"{t['turns']} turns in {t['sessions']} sessions · memory = {t['memory_vs_full_history']:.0%} of full history"
        f" · fact recalled for {t['questions_with_fact_recalled']}/{t['questions']} questions",
    )
    console.print(table)
