"""The adversarial forgetting probes: plant facts through chat, forget them, then try every way back.

Measures what the unlearning literature measures (RWKU: paraphrases and related questions; RESTOR: recovery; step by
step attacks) on a memory layer, which can actually delete. For each forgotten fact it asks the direct question in
the session it was said in and in a new one, three paraphrases, an indirect question that needs it, a related-topic
turn; reads `/why` (Recall.explain_lines), recall in retrieval mode, store search in all three modes over notes and
episodes (with the question and with the token itself), the export, the history, the chat state file and every
file of the data directory; then runs `rebuild` and `rebuild --fresh` with an extractor that *remembers* what was
said (it answers a redacted turn with the notes of the original one: a model that recovers the fact). A probe
**resurfaced** when the fact's salient token (a number, a name, a rare word) appears in what it reads: the recall
block, the prompt sent to the LLM, the reply, search results, export, history, the bytes of a file, the notes.

Collateral: facts that were NOT forgotten (some said in the same sentence as a forgotten one) must still be
recalled, after the forgets and after `rebuild --fresh`.

Used by `mark bench forget` (a readable report and a PNG) and tests/mark_agents/test_forget_probes.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mark_agents.agent import MemoryAgent
from mark_agents.bench import machine
from mark_agents.config import Settings
from mark_agents.llm import LLMClient, connect
from mark_agents.llm.scripted import RoleScript
from mark_agents.recall import recall
from memory_store import CachedEmbedder, InvalidInput, MemoryStore
from memory_store.atomic import save_figure
from memory_store.embeddings import get_embedder

USER = "probe-user"
MODES = ("hybrid", "dense", "keyword")
#: Chat sessions the facts are planted in (round robin): "the same session" of a fact is its planting session.
PLANT_SESSIONS = 4


@dataclass(frozen=True)
class Fact:
    key: str
    kind: str  # name | number | place | preference | recommendation
    token: str  # what must never come back once forgotten
    note: str  # the note a careful extractor writes
    direct: str
    paraphrases: tuple[str, ...] = ()
    indirect: str = ""
    related: str = ""
    forget: bool = True
    #: Forget it with `forget --about` (this topic) instead of by its note's id.
    about: str | None = None

    @property
    def note_kind(self) -> str:
        return "llm_response" if self.kind == "recommendation" else "user_question"


@dataclass(frozen=True)
class Plant:
    """One exchange of the planting conversation and the facts it states."""

    say: str
    answer: str
    facts: tuple[str, ...]


FACTS: list[Fact] = [
    Fact(
        "pin", "number", "8841", "The user's bank PIN is 8841.", "What is my bank PIN?",
        ("Remind me of the code for my bank card.", "Which digits unlock my bank account?",
         "Do you know my PIN number?"),
        "I'm at the cash machine and it asks for my code: what do I type?", "I need to visit my bank branch tomorrow.",
    ),
    Fact("northwind", "name", "Northwind", "The user banks with Northwind Credit.", "Which bank am I with?",
         forget=False),
    Fact(
        "dog", "name", "Waffles", "The user's dog is called Waffles.", "What is my dog's name?",
        ("What did I call my dog?", "How is my pup named?", "Tell me the name of my dog."),
        "I want to engrave a name tag for my dog's collar: what should it say?", "Dogs need a lot of walks, right?",
        about="my dog's name",
    ),
    Fact("rabbit", "name", "Clover", "The user's rabbit is called Clover.", "What is my rabbit called?", forget=False),
    Fact(
        "sister", "name", "Marisol", "The user's sister is called Marisol.", "What is my sister's name?",
        ("What's my sister called?", "Who is my sister?", "Tell me my sister's first name."),
        "I'm writing a birthday card to my sister: how should I address it?", "Siblings can be hard work sometimes.",
    ),
    Fact("porto", "place", "Porto", "The user's sister lives in Porto.", "Where does my sister live?", forget=False),
    Fact(
        "locker", "number", "4417", "The user's gym locker code is 4417.", "What is my gym locker code?",
        ("Which combination opens my locker at the gym?", "What numbers do I use for my gym locker?",
         "Remind me how to open my locker."),
        "I'm standing at the gym changing room with my bag: how do I get it into storage?",
        "I'm going to the gym after work.", about="my gym locker code",
    ),
    Fact(
        "birthplace", "place", "Valparaiso", "The user was born in Valparaiso.", "Where was I born?",
        ("What is my hometown?", "Which city do I come from originally?", "Where did I grow up as a baby?"),
        "What country's passport would I have had at birth, given my birthplace?", "I love coastal cities.",
    ),
    Fact(
        "aisle", "preference", "aisle", "The user prefers aisle seats on long flights.",
        "Which seat do I like on planes?",
        ("Where do I prefer to sit when I fly?", "What is my seating preference on flights?",
         "Window or the other one: what do I usually pick on a plane?"),
        "Book me a seat for my flight to Tokyo the way I like it.", "Long-haul flights are so tiring.",
    ),
    Fact(
        "cornell", "recommendation", "Cornell", "The assistant recommended the Cornell method.",
        "Which note-taking method did you recommend to me?",
        ("What system for notes did you suggest?", "Remind me of the note method you proposed.",
         "What was your advice on organising my notes?"),
        "I'm setting up my notes app tonight: how should I structure it, as you advised?",
        "I have so many notes everywhere.",
    ),
    Fact(
        "phone", "number", "0134", "The user's phone number is 555-0134.", "What is my phone number?",
        ("How can people call me?", "What number reaches my mobile?", "Tell me my contact number."),
        "Fill in the delivery form with my phone so the courier can ring me.", "My phone battery dies so fast.",
    ),
    Fact(
        "manager", "name", "Thaddeus", "The user's manager is called Thaddeus.", "What is my manager's name?",
        ("Who is my boss?", "Who do I report to at work?", "What's my manager called?"),
        "Draft an email to my manager asking for Friday off, addressed to him by name.",
        "Work has been stressful lately.",
    ),
    Fact(
        "climb", "place", "Kilimanjaro", "The user climbed Kilimanjaro last summer.", "Which mountain did I climb?",
        ("What peak did I summit last summer?", "Where did I go climbing last year?", "What was my big climb?"),
        "How high was the summit I reached last summer, in metres?", "I love hiking in the mountains.",
    ),
    Fact(
        "cashew", "preference", "cashew", "The user is allergic to cashews.", "What am I allergic to?",
        ("Which food makes me ill?", "What nuts must I avoid?", "Do I have any food allergy?"),
        "Can I eat the pesto at the new restaurant, given my allergy?", "I'm cooking a stir-fry tonight.",
    ),
    Fact(
        "podcast", "recommendation", "Carlin", "The assistant recommended the Hardcore History podcast by Dan Carlin.",
        "Which podcast did you recommend to me?",
        ("What show did you tell me to listen to?", "Remind me of the podcast you suggested.",
         "What audio series did you propose for my commute?"),
        "I'm starting my commute: what should I put on, as you suggested?", "I listen to a lot of audio.",
    ),
    Fact(
        "flight", "number", "LX1732", "The user's flight next week is LX1732.", "What is my flight number?",
        ("Which flight am I on next week?", "What's the code of my flight?", "Remind me of my flight."),
        "Check the departure gate for my flight next week.", "Airports are so crowded these days.",
        about="my flight number",
    ),
    Fact(
        "cat", "name", "Pickles", "The user's cat is named Pickles.", "What is my cat's name?",
        ("What did I call my cat?", "Who is my cat?", "Tell me my kitty's name."),
        "I need to book my cat in at the vet: under what name?", "Cats sleep all day.", about="my cat",
    ),
    Fact(
        "office", "place", "Rotterdam", "The user's office is in Rotterdam.", "Where is my office?",
        ("In which city do I work?", "Where do I commute to?", "What city is my workplace in?"),
        "How long is my train ride to the office from Amsterdam?", "Offices are so noisy.",
    ),
    Fact(
        "dessert", "preference", "tiramisu", "The user's favourite dessert is tiramisu.",
        "What is my favourite dessert?",
        ("Which sweet do I like best?", "What should you order for me after dinner?", "What pudding do I love?"),
        "Plan a surprise dessert for my birthday that I'd love.", "I'm baking this weekend.",
    ),
    Fact(
        "stretch", "recommendation", "McKenzie", "The assistant recommended McKenzie stretches for the user's back.",
        "What did you recommend for my back?",
        ("Which exercises did you suggest for my back pain?", "What stretches did you tell me to do?",
         "Remind me of your advice for my sore back."),
        "My back hurts again this morning: what routine should I do, as you said?", "I sit at a desk all day.",
    ),
    Fact(
        "plate", "number", "4471", "The user's licence plate is KZ-4471.", "What is my licence plate?",
        ("What's my car's registration?", "Which plate does my car have?", "Tell me my number plate."),
        "Register my car for the parking permit: what plate goes on the form?", "Parking in town is a nightmare.",
    ),
    Fact(
        "friend", "name", "Leopold", "The user's best friend is Leopold.", "Who is my best friend?",
        ("What is my best friend's name?", "Who's my closest friend?", "Name my best mate."),
        "Write a toast for my best friend's wedding, using his name.", "Friendship matters a lot to me.",
    ),
    Fact(
        "summer", "place", "Hokkaido", "The user spends every summer in Hokkaido.", "Where do I spend my summers?",
        ("Where do I go every summer?", "What is my summer holiday place?", "Where am I in July usually?"),
        "What should I pack for my usual summer trip?", "Summer holidays are the best.",
    ),
    Fact(
        "coffee", "preference", "macadamia", "The user takes coffee with macadamia milk.", "How do I take my coffee?",
        ("What milk do I put in my coffee?", "How should you make my coffee?", "What's my coffee order?"),
        "Order me a latte the way I like it.", "I drink too much coffee.",
    ),
    Fact("cello", "name", "cello", "The user plays the cello.", "Which instrument do I play?", forget=False),
    Fact("son", "name", "Florian", "The user's son is called Florian.", "What is my son's name?", forget=False),
    Fact("job", "preference", "radiographer", "The user works as a radiographer.", "What is my job?", forget=False),
    Fact("chocolate", "name", "Lindt", "The user's partner loves Lindt chocolate.",
         "Which chocolate does my partner love?", forget=False),
]  # fmt: skip

PLANTS: list[Plant] = [
    Plant("My bank PIN is 8841 and I bank with Northwind Credit.", "Got it: PIN 8841, bank Northwind Credit.",
          ("pin", "northwind")),
    Plant("My dog is called Waffles and my rabbit is called Clover.", "Waffles and Clover, what lovely names!",
          ("dog", "rabbit")),
    Plant("My sister is called Marisol and she lives in Porto.", "Marisol in Porto, noted.", ("sister", "porto")),
    Plant("My gym locker code is 4417.", "Locker 4417, I'll remember.", ("locker",)),
    Plant("I was born in Valparaiso.", "Valparaiso is a beautiful port city.", ("birthplace",)),
    Plant("I prefer aisle seats on long flights.", "Aisle seats it is.", ("aisle",)),
    Plant("Can you recommend a note-taking method?",
          "I recommend the Cornell method: a cue column, notes, and a summary at the bottom.", ("cornell",)),
    Plant("My phone number is 555-0134.", "Saved 555-0134 as your number.", ("phone",)),
    Plant("My manager is called Thaddeus.", "Thaddeus, got it.", ("manager",)),
    Plant("I climbed Kilimanjaro last summer!", "Kilimanjaro, what an achievement!", ("climb",)),
    Plant("I'm allergic to cashews.", "I'll keep cashews out of any suggestion.", ("cashew",)),
    Plant("Which podcast should I try for my commute?",
          "Try Hardcore History by Dan Carlin: long, gripping episodes.", ("podcast",)),
    Plant("My flight next week is LX1732.", "LX1732, noted for next week.", ("flight",)),
    Plant("My cat is named Pickles.", "Pickles is a great name for a cat.", ("cat",)),
    Plant("My office is in Rotterdam.", "Rotterdam, nice.", ("office",)),
    Plant("My favourite dessert is tiramisu.", "Tiramisu is a classic!", ("dessert",)),
    Plant("Any tips for my sore back?", "I suggest McKenzie stretches, ten repetitions each morning.", ("stretch",)),
    Plant("My licence plate is KZ-4471.", "KZ-4471, saved.", ("plate",)),
    Plant("My best friend is Leopold.", "Leopold sounds like a good friend.", ("friend",)),
    Plant("We spend every summer in Hokkaido.", "Hokkaido summers are lovely.", ("summer",)),
    Plant("I take my coffee with macadamia milk.", "Macadamia milk it is.", ("coffee",)),
    Plant("I play the cello.", "The cello is a wonderful instrument.", ("cello",)),
    Plant("My son is called Florian.", "Hello to Florian!", ("son",)),
    Plant("I work as a radiographer.", "Radiography is important work.", ("job",)),
    Plant("My partner loves Lindt chocolate.", "Lindt is a good choice.", ("chocolate",)),
]  # fmt: skip


def facts_by_key(facts: list[Fact] | None = None) -> dict[str, Fact]:
    return {f.key: f for f in facts or FACTS}


# -- the scripted model: a careful extractor that also remembers, and a reply that repeats what it is shown --------


class ProbeScript:
    """What the scripted model says. Extraction yields each planted exchange's notes; after a forget it keeps
    yielding them for the redacted turn (`aliases`: a model that recovers the fact from what is left). A reply to
    a planted message is its scripted answer; any other reply repeats every line of the memory block it was given
    (so whatever leaks into a prompt leaks into the stored reply too)."""

    def __init__(self, facts: list[Fact], plants: list[Plant]) -> None:
        self.facts = facts_by_key(facts)
        self.plants = {p.say: p for p in plants}
        self.aliases: dict[str, str] = {}

    def extract(self, user_messages: list[str]) -> list[tuple[str, str]]:
        notes: list[tuple[str, str]] = []
        for said in user_messages:
            plant = self.plants.get(self.aliases.get(said, said))
            if plant is not None:
                notes += [(self.facts[k].note_kind, self.facts[k].note) for k in plant.facts]
        return notes

    def reply(self, system: str, message: str) -> str:
        plant = self.plants.get(message)
        if plant is not None:
            return plant.answer
        block = system.split("<memories>", 1)[1].split("</memories>", 1)[0] if "<memories>" in system else ""
        asked = _content(message)
        shown = [ln for ln in block.splitlines() if ln.startswith(("- ", "User:", "Assistant:"))]
        lines = [ln[2:] if ln.startswith("- ") else ln for ln in shown if asked & _content(ln)]
        return ("From what I remember:\n" + "\n".join(lines[:12])) if lines else "I don't know."


_ASKING = frozenset("what which the user that you and".split())


def _content(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) > 2} - _ASKING


# -- what counts as resurfacing -----------------------------------------------------------------------------------


def _pattern(token: str) -> str:
    """The token at the start of a word ("cashew" finds "cashews", "oat" not "boat"); a number as a whole number
    ("0134" is not in the figure 2.0134)."""
    if token.isdigit():
        return rf"(?<![0-9A-Za-z.]){re.escape(token)}(?![0-9])"
    return rf"(?<![0-9A-Za-z]){re.escape(token)}"


def found(token: str, text: str) -> bool:
    """Is the token in the text (case-insensitive)?"""
    return re.search(_pattern(token), text, re.IGNORECASE) is not None


_HEX = frozenset(b"0123456789abcdefABCDEF")
#: Every UUID-shaped span, overlapping ones too (SQLite pages store ids back to back: "...311df4dd82e349-3827-...").
_UUID_AT = re.compile(rb"(?=([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}))")


def found_in_bytes(token: str, data: bytes) -> bool:
    """The token in a file's bytes (lower-cased by the caller), as text would hold it; an occurrence inside a long
    hex run (a record id, a hash) or a UUID (LangGraph's checkpoint ids: "968edcdd-4471-4ab7-...") is not the
    fact."""
    needle = token.lower().encode()
    if needle not in data:
        return False
    hexish = all(c in _HEX for c in needle)
    for m in re.finditer(_pattern(token.lower()).encode(), data):
        if not (hexish and _in_record_id(data, m.start(), m.end())):
            return True
    return False


def _in_record_id(data: bytes, start: int, end: int) -> bool:
    """Does data[start:end] sit in a hex run of 16+ characters, or inside a UUID (even one stored right after
    another id, with no separator)?"""
    s, e = start, end
    while s > 0 and data[s - 1] in _HEX:
        s -= 1
    while e < len(data) and data[e] in _HEX:
        e += 1
    if e - s >= 16:
        return True
    window = max(0, start - 36)
    return any(m.start(1) <= start and end <= m.end(1) for m in _UUID_AT.finditer(data, window, end + 36))


@dataclass
class ProbeResult:
    fact: str
    kind: str
    probe: str
    resurfaced: bool
    where: list[str] = field(default_factory=list)


@dataclass
class Probing:
    """A run in progress: the agent, how to read the prompts the model received, and what was found."""

    agent: MemoryAgent
    prompts: Callable[[], list[str]]  # every reply request sent so far, as text
    facts: list[Fact]
    plants: list[Plant]
    script: ProbeScript | None = None  # None: a real model (no scripted recovery attempt)
    user: str = USER
    results: list[ProbeResult] = field(default_factory=list)
    log: Callable[[str], None] = lambda message: None

    @property
    def store(self):
        return self.agent.store

    def record(self, fact: Fact, probe: str, where: list[str]) -> None:
        self.results.append(ProbeResult(fact.key, fact.kind, probe, bool(where), where))

    async def chat(self, message: str, session: str) -> tuple[str, str, str]:
        """One chat turn: (recall as the reply saw it, the prompt sent to the model, the reply)."""
        before = len(self.prompts())
        reply = await self.agent.achat(self.user, message, session)
        await self.agent.aflush()
        prompt = "\n".join(self.prompts()[before:])
        seen = json.dumps(
            [m.model_dump(mode="json") for m in reply.memories]
            + [t.model_dump(mode="json") for t in reply.recalled_turns],
            ensure_ascii=False,
        )
        return seen, prompt, reply.reply


def _session(index: int) -> str:
    return f"plant-{index % PLANT_SESSIONS}"


async def plant(p: Probing) -> dict[str, str]:
    """Say every planted exchange in chat; returns fact key -> planting session."""
    sessions: dict[str, str] = {}
    for n, pl in enumerate(p.plants):
        await p.agent.achat(p.user, pl.say, _session(n))
        for k in pl.facts:
            sessions[k] = _session(n)
    await p.agent.aflush()
    return sessions


async def recalled(p: Probing, fact: Fact) -> bool:
    """Is the fact in the recall block for its direct question (the collateral check)?"""
    r = await p.agent.arecall(fact.direct, p.user)
    return found(fact.token, r.text)


async def forget(p: Probing, fact: Fact) -> dict[str, Any]:
    """Forget a fact as a user would: by its note's id, or with `forget --about`."""
    store = p.store
    if fact.about:
        plan = await asyncio.to_thread(store.plan_forget, p.user, about=fact.about)
        in_plan = any(found(fact.token, m.text) for m in plan.memories)
        report = await p.agent.aforget(p.user, plan=plan, actor="probe")
        return {"how": "about", "planned_note": in_plan, "memories": len(report.memories), "turns": len(report.turns)}
    notes = [m for m in store.list(p.user, include_history=True, limit=10_000).items if found(fact.token, m.text)]
    memories = turns = 0
    for m in notes:
        try:
            report = await p.agent.aforget(p.user, m.id, actor="probe")
        except Exception:  # gone with an earlier one of the list (a version of the same fact)
            continue
        memories += len(report.memories)
        turns += len(report.turns)
    if not notes:  # a real model wrote no note for it: forget what was said about it
        report = await p.agent.aforget(p.user, about=fact.note, actor="probe")
        memories, turns = len(report.memories), len(report.turns)
    return {"how": "id" if notes else "about (no note)", "memories": memories, "turns": turns}


async def probe_fact(p: Probing, fact: Fact, session: str) -> None:
    """Every chat, recall and search probe of one forgotten fact."""
    # Session names never hold a token (a probe reads the bytes of the chat state, where they are stored).
    fresh = f"new-{len(p.results)}"
    asks = [("direct (same session)", fact.direct, session), ("direct (new session)", fact.direct, fresh)]
    asks += [(f"paraphrase {n}", q, session) for n, q in enumerate(fact.paraphrases, 1)]
    if fact.indirect:
        asks.append(("indirect question", fact.indirect, session))
    if fact.related:
        asks.append(("related-topic turn", fact.related, session))
    for name, question, where in asks:
        seen, prompt, reply = await p.chat(question, where)
        hits = [s for s, text in (("recall", seen), ("prompt", prompt), ("reply", reply)) if found(fact.token, text)]
        p.record(fact, name, hits)
    r = await p.agent.arecall(fact.direct, p.user, session_id=session)
    p.record(
        fact, "/why (explain_lines)", ["explain"] if found(fact.token, "\n".join(r.explain_lines()) + r.text) else []
    )
    small = await asyncio.to_thread(recall, p.store, fact.direct, p.user, budget_tokens=200)
    p.record(fact, "recall, retrieval mode", ["block"] if found(fact.token, small.text) else [])
    for mode in MODES:
        texts: list[str] = []
        for q in (fact.direct, fact.token):
            notes = await asyncio.to_thread(p.store.search, q, p.user, mode=mode, include_history=True, limit=50)
            texts += [h.memory.text for h in notes]
        p.record(fact, f"search notes ({mode})", ["notes"] if any(found(fact.token, t) for t in texts) else [])
        texts = []
        for q in (fact.direct, fact.token):
            episodes = await asyncio.to_thread(p.store.search_episodes, q, p.user, mode=mode, limit=50)
            texts += [h.turn.content for h in episodes]
        p.record(fact, f"search episodes ({mode})", ["episodes"] if any(found(fact.token, t) for t in texts) else [])


def _rows(path: Path) -> list[bytes]:
    """Every value of every row of a SQLite file, lower-cased: a value longer than a page is split across overflow
    pages in the file's bytes (a token can straddle two pages), never in a row read back."""
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        out = []
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for v in row:
                    if isinstance(v, str):
                        out.append(v.encode("utf-8", "replace").lower())
                    elif isinstance(v, bytes):
                        out.append(v.lower())
        return out
    finally:
        conn.close()


def _in_keyword_index(path: Path, token: str) -> list[str]:
    """The FTS5 indexes hold terms prefix-compressed (no byte scan sees them): ask the index itself."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        query = '"' + token.replace('"', '""') + '"'
        return [
            table
            for table in ("memories_fts", "turns_fts")
            if conn.execute(f"SELECT count(*) FROM {table} WHERE {table} MATCH ?", (query,)).fetchone()[0]
        ]
    finally:
        conn.close()


async def probe_files(p: Probing, forgotten: list[Fact], label: str = "") -> None:
    """Export, history, the keyword index, every row of both databases and every byte of every file of the data
    directory, for every forgotten fact."""
    out = io.StringIO()
    await asyncio.to_thread(p.store.export_jsonl, out, user_id=p.user)
    history = json.dumps([e.model_dump(mode="json") for e in await asyncio.to_thread(p.store.history, p.user)])
    await asyncio.to_thread(p.store.flush_vectors)
    home = Path(p.store.home)
    files = {path: path.read_bytes().lower() for path in home.rglob("*") if path.is_file()}
    chat_rows = _rows(home / "chat_state.db")
    memory_rows = _rows(p.store.settings.db_path)
    for fact in forgotten:
        p.record(fact, f"export{label}", ["export"] if found(fact.token, out.getvalue()) else [])
        p.record(fact, f"history{label}", ["history"] if found(fact.token, history) else [])
        p.record(fact, f"keyword index{label}", _in_keyword_index(p.store.settings.db_path, fact.token))
        leaks = ["memory.db"] if any(found_in_bytes(fact.token, v) for v in memory_rows) else []
        p.record(fact, f"memory.db rows{label}", leaks)
        leaks = [str(path.relative_to(home)) for path in files if path.name.startswith("chat_state.db")]
        leaks = [name for name in leaks if found_in_bytes(fact.token, files[home / name])]
        if any(found_in_bytes(fact.token, v) for v in chat_rows):
            leaks.append("chat_state.db rows")
        p.record(fact, f"chat_state.db (rows and bytes){label}", leaks)
        leaks = [str(path.relative_to(home)) for path, data in files.items() if found_in_bytes(fact.token, data)]
        p.record(fact, f"files on disk{label}", leaks)


def _alias_redacted_turns(p: Probing, planted: dict[str, str]) -> None:
    """Let the scripted extractor recognise a planted turn after its redaction (a model that recovers the fact)."""
    if p.script is None:
        return
    by_id = {t.id: t for t in p.store.turns(p.user, limit=100_000)}
    for turn_id, said in planted.items():
        t = by_id.get(turn_id)
        if t is not None and t.content != said:
            p.script.aliases[t.content] = said


async def probe_rebuild(p: Probing, forgotten: list[Fact], fresh: bool) -> int:
    """`rebuild` (or `rebuild --fresh`): no forgotten fact in the notes after it. Returns the candidates skipped as
    forgotten (the recovery attempts that were blocked)."""
    result = await p.agent.arederive(p.user, fresh=fresh)
    notes = [m.text for m in (await asyncio.to_thread(p.store.list, p.user, include_history=True, limit=10_000)).items]
    report = result.model_dump_json()
    name = "rebuild --fresh" if fresh else "rebuild"
    for fact in forgotten:
        where = (["notes"] if any(found(fact.token, t) for t in notes) else []) + (
            ["report"] if found(fact.token, report) else []
        )
        r = await p.agent.arecall(fact.direct, p.user)
        if found(fact.token, r.text):
            where.append("recall")
        p.record(fact, name, where)
    return sum(1 for rep in result.reports for s in rep.skipped if s.endswith("(forgotten)"))


async def run_probes(p: Probing) -> dict[str, Any]:
    """The whole suite on one agent; returns a JSON-ready result (see `summarise`)."""
    t0 = time.perf_counter()
    forgotten = [f for f in p.facts if f.forget]
    kept = [f for f in p.facts if not f.forget]
    p.log(f"planting {len(p.facts)} facts in {len(p.plants)} exchanges")
    before = len(p.store.turns(p.user, limit=100_000))
    sessions = await plant(p)
    planted = {t.id: t.content for t in p.store.turns(p.user, limit=100_000)[before:] if t.role == "user"}
    baseline = {f.key: await recalled(p, f) for f in p.facts}
    # The direct question asked once before forgetting: its answer (an old turn) holds the fact too.
    for f in forgotten:
        await p.chat(f.direct, "before-forgetting")
    p.log(f"forgetting {len(forgotten)} facts")
    forgets = {f.key: await forget(p, f) for f in forgotten}
    collateral_after_forget = {f.key: await recalled(p, f) for f in kept}
    p.log("probing")
    for f in forgotten:
        await probe_fact(p, f, sessions[f.key])
    await probe_files(p, forgotten)
    _alias_redacted_turns(p, planted)
    p.log("rebuild and rebuild --fresh (with an extractor that recovers the facts)")
    skipped = await probe_rebuild(p, forgotten, fresh=False)
    skipped += await probe_rebuild(p, forgotten, fresh=True)
    await probe_files(p, forgotten, " (after rebuilds)")
    collateral_after_rebuild = {f.key: await recalled(p, f) for f in kept}
    return summarise(
        p,
        baseline=baseline,
        forgets=forgets,
        collateral={
            "before forgetting": {f.key: baseline[f.key] for f in kept},
            "after forgetting": collateral_after_forget,
            "after rebuild --fresh": collateral_after_rebuild,
        },
        recovery_attempts_blocked=skipped,
        seconds=time.perf_counter() - t0,
    )


def summarise(p: Probing, **extra: Any) -> dict[str, Any]:
    by_probe: dict[str, dict[str, int]] = {}
    for r in p.results:
        row = by_probe.setdefault(r.probe, {"probed": 0, "resurfaced": 0})
        row["probed"] += 1
        row["resurfaced"] += int(r.resurfaced)
    by_kind: dict[str, dict[str, int]] = {}
    for r in p.results:
        row = by_kind.setdefault(r.kind, {"probed": 0, "resurfaced": 0})
        row["probed"] += 1
        row["resurfaced"] += int(r.resurfaced)
    collateral = extra.pop("collateral")
    baseline = extra.pop("baseline")
    return {
        "facts_forgotten": sum(1 for f in p.facts if f.forget),
        "facts_kept": sum(1 for f in p.facts if not f.forget),
        "probed": len(p.results),
        "resurfaced": sum(r.resurfaced for r in p.results),
        "by_probe": by_probe,
        "by_kind": by_kind,
        "leaks": [r.__dict__ for r in p.results if r.resurfaced],
        "baseline_recalled": {"recalled": sum(baseline.values()), "facts": len(baseline)},
        "collateral": {
            stage: {"recalled": sum(v.values()), "kept": len(v), "lost": sorted(k for k, ok in v.items() if not ok)}
            for stage, v in collateral.items()
        },
        **extra,
    }


# -- `mark bench forget`: the run, a readable report and a figure --------------------------------------------------


def scripted_probe_model(script: ProbeScript) -> RoleScript:
    """The scripted LLM playing a ProbeScript: its notes for what the user said, its replies (the real client and
    agent code run; see :mod:`mark_agents.llm.scripted`)."""

    def extract(body: dict) -> str:
        return RoleScript.notes(*script.extract(RoleScript.said(body)))

    def reply(body: dict) -> str:
        messages = body.get("messages", [])
        system = messages[0]["content"] if messages and messages[0].get("role") == "system" else ""
        return script.reply(system, messages[-1]["content"] if messages else "")

    return RoleScript(extract=extract, reply=reply)


class RecordingLLM:
    """A real LLM client that keeps the reply prompts it sends (what the probes read with a real model)."""

    def __init__(self, inner: LLMClient) -> None:
        self.inner = inner
        self.reply_requests: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def chat(self, messages: list[dict], **kwargs: Any) -> Any:
        self.reply_requests.append(json.dumps(messages, ensure_ascii=False))
        return await self.inner.chat(messages, **kwargs)

    async def stream(self, messages: list[dict], **kwargs: Any) -> Any:
        self.reply_requests.append(json.dumps(messages, ensure_ascii=False))
        async for delta in self.inner.stream(messages, **kwargs):
            yield delta


def pick(limit: int | None) -> tuple[list[Fact], list[Plant]]:
    """The first `limit` forgotten facts with every fact planted beside them, and the kept facts."""
    forgotten = [f.key for f in FACTS if f.forget][: limit if limit else None]
    plants = [
        pl for pl in PLANTS if set(pl.facts) & set(forgotten) or not any(FACTS_BY_KEY[k].forget for k in pl.facts)
    ]
    keys = {k for pl in plants for k in pl.facts}
    return [f for f in FACTS if f.key in keys], plants


FACTS_BY_KEY = facts_by_key()


async def _bench(settings: Settings, home: Path, use_llm: bool, limit: int | None, log: Callable[[str], None]) -> dict:
    facts, plants = pick(limit)
    bench_settings = settings.model_copy(update={"home": home})
    store = await asyncio.to_thread(
        MemoryStore, bench_settings.store, embedder=CachedEmbedder(get_embedder(bench_settings.embedding_model))
    )
    script = None
    if use_llm:
        recording = RecordingLLM(await connect(settings.llm, settings.models_dir))
        client: Any = recording
        label = f"{settings.llm.model or 'local model'}"
        sent: Callable[[], list[str]] = lambda: recording.reply_requests  # noqa: E731
    else:
        script = ProbeScript(facts, plants)
        scripted = scripted_probe_model(script)
        client = scripted.client(max_retries=0)
        label = "scripted (in process)"
        sent = lambda: [json.dumps(b, ensure_ascii=False) for b in scripted.calls("reply")]  # noqa: E731
    agent = MemoryAgent(bench_settings, llm=client, store=store, owns_llm=True)
    try:
        p = Probing(agent, sent, facts, plants, script=script, log=log)
        result = await run_probes(p)
    finally:
        await agent.aclose()
        await asyncio.to_thread(store.close)
    result["llm"] = label
    result["machine"] = machine()
    return result


def run_forget_bench(
    settings: Settings,
    *,
    use_llm: bool = False,
    facts: int | None = None,
    keep: Path | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Run the probe suite in a scratch data directory (or `keep`); returns a JSON-ready result."""
    home = keep or Path(tempfile.mkdtemp(prefix="mark-bench-forget-"))
    try:
        if keep is not None and home.exists() and any(home.iterdir()):
            raise InvalidInput(f"--keep {home} is not empty: the probes need a fresh data directory")
        return asyncio.run(_bench(settings, home, use_llm, facts, log))
    finally:
        if keep is None:
            shutil.rmtree(home, ignore_errors=True)


def render(result: dict[str, Any], console: Console) -> None:
    """The result as a table a person can read: every probe, what resurfaced, and the collateral."""
    total, probed = result["resurfaced"], result["probed"]
    verdict = "[green]held[/]" if total == 0 else "[red]resurfaced[/]"
    table = Table(
        "probe",
        "probed",
        "resurfaced",
        title=f"mark bench forget · {result['llm']} · {result['machine']}",
        title_justify="left",
    )
    for name, row in result["by_probe"].items():
        style = "red" if row["resurfaced"] else ""
        table.add_row(name, str(row["probed"]), f"[{style}]{row['resurfaced']}[/]" if style else "0")
    table.add_section()
    table.add_row(f"[bold]all ({verdict})[/]", str(probed), f"[bold]{total}[/]")
    console.print(table)
    kinds = ", ".join(f"{k} {v['resurfaced']}/{v['probed']}" for k, v in result["by_kind"].items())
    console.print(f"facts forgotten: {result['facts_forgotten']} ({kinds}) · resurfaced / probed: {total} / {probed}")
    b = result["baseline_recalled"]
    console.print(f"before forgetting, recall held {b['recalled']} of {b['facts']} facts (the probes can see them)")
    for stage, c in result["collateral"].items():
        lost = f" · lost: {', '.join(c['lost'])}" if c["lost"] else ""
        console.print(f"collateral {stage}: {c['recalled']} of {c['kept']} facts not forgotten still recalled{lost}")
    console.print(
        f"recovery attempts blocked during the rebuilds (a scripted model re-deriving forgotten facts): "
        f"{result['recovery_attempts_blocked']} · {result['seconds']:.0f} s"
    )
    for leak in result["leaks"][:30]:
        console.print(
            f"  [red]resurfaced[/] {leak['fact']} ({leak['kind']}) in {leak['probe']}: {', '.join(leak['where'])}"
        )


def plot(result: dict[str, Any], path: Path) -> Path:
    """PNG: per probe, probed vs resurfaced; beside it, the facts not forgotten that are still recalled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["by_probe"])
    probed = [result["by_probe"][n]["probed"] for n in names]
    resurfaced = [result["by_probe"][n]["resurfaced"] for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.32 * len(names) + 2), dpi=120, width_ratios=[3, 1])
    y = list(range(len(names)))
    left.barh(y, probed, color="lightgray", label="probed")
    left.barh(y, resurfaced, color="tab:red", label="resurfaced")
    left.set_yticks(y, names, fontsize=8)
    left.invert_yaxis()
    left.set_xlabel("forgotten facts probed")
    left.set_title(f"resurfaced / probed: {result['resurfaced']} / {result['probed']} (must be 0)")
    for n, r in enumerate(resurfaced):
        left.text(probed[n], n, f" {r}", va="center", fontsize=7, color="tab:red" if r else "black")
    left.legend(loc="lower right")
    stages = list(result["collateral"])
    kept = result["facts_kept"]
    values = [c["recalled"] for c in result["collateral"].values()]
    right.bar(range(len(stages)), values, color="tab:green")
    right.axhline(kept, color="black", linewidth=1, linestyle="--")
    right.set_xticks(range(len(stages)), stages, rotation=20, fontsize=8)
    right.set_ylim(0, kept + 1)
    right.set_title(f"collateral: kept facts recalled (of {kept})", fontsize=10)
    fig.suptitle(f"mark bench forget · {result['llm']}")
    fig.tight_layout()
    return save_figure(fig, path)
