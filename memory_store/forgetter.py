"""`MemoryStore.forget`: remove a fact from everything that could recall or re-derive it.

One forget, one transaction: the notes holding the fact go (a note holding it beside another fact keeps the other);
the turns it stood in are redacted where it stands and re-embedded (the keyword index follows by trigger); history
keeps the events without their text (a keyed hash instead); feedback comments and extraction errors are redacted;
and the fact's fingerprint is recorded (memory_store.forgetting), so extraction, rebuilds and recall never bring
it back from what was said before. Then the user's vector groups are rebuilt from SQLite (no old vector is left in
the index's files) and the database's free space and keyword index are scrubbed (secure delete, FTS merge, WAL
truncated). The checkpointed chat state lives in mark_agents, which rewrites it from the report.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from memory_store.errors import InvalidInput
from memory_store.forgetting import (
    MARKER,
    Fingerprint,
    ForgetGuard,
    clause_candidates,
    note_matches,
    redact,
    removed_clauses,
    salient,
    text_hash,
)
from memory_store.ids import new_id
from memory_store.importing import ExportFile
from memory_store.models import ForgetPlan, ForgetReport, Memory, Turn
from memory_store.validation import check_scope_id, check_text, user_key

if TYPE_CHECKING:
    from memory_store.backend import Transaction
    from memory_store.store import MemoryStore

log = logging.getLogger(__name__)

#: `forget --about`: a note or an episode matches the topic when it shares one of the topic's words (stemmed, not
#: a generic word) and is at least this similar (cosine) ...
ABOUT_SIMILARITY = 0.35
#: ... or, sharing no word, when it is this similar (a close paraphrase). Small embedding models place a question
#: about another thing close to the topic ("What is my cat's name?" to "my dog's name": 0.7); the shared word keeps
#: such neighbours out.
ABOUT_PARAPHRASE = 0.8
#: A source turn that shares no word with its forgotten note loses its clause closest in meaning, if this close.
FALLBACK_SIMILARITY = 0.4
#: Candidates considered for `about` in each layer.
ABOUT_CANDIDATES = 50


@dataclass
class _Work:
    """A forget being computed: clear text lives only here, in memory, until the transaction is written."""

    fingerprints: list[tuple[Fingerprint, str | None, str, str | None]] = field(default_factory=list)
    turns: dict[str, tuple[Turn, str, str | None]] = field(default_factory=dict)  # id -> (turn, content, error)


def _content_left(text: str) -> bool:
    return bool(salient(text.replace(MARKER, " ")).topic)


def plan(store: MemoryStore, user_id: str, memory_id: str | None, about: str | None) -> ForgetPlan:
    check_scope_id(user_id)
    if (memory_id is None) == (about is None):
        raise InvalidInput("forget needs a memory id or a topic (about), not both")
    if memory_id is not None:
        target = store.get(store.resolve_id(memory_id, user_id), user_id)
        return ForgetPlan(user_id=user_id, memories=_same_fact(store, target))
    topic = check_text(about, "topic")
    notes = store.search(topic, user_id, limit=ABOUT_CANDIDATES, include_history=True, explain=True)
    episodes = store.search_episodes(topic, user_id, limit=ABOUT_CANDIDATES)
    words = salient(topic).topic

    def matches(text: str, sim: float) -> bool:
        return sim >= ABOUT_PARAPHRASE or (sim >= ABOUT_SIMILARITY and bool(words & salient(text).topic))

    chosen: dict[str, Memory] = {}
    for hit in notes:
        if matches(hit.memory.text, hit.explain.similarity if hit.explain else 0.0):
            for m in _same_fact(store, hit.memory):
                chosen.setdefault(m.id, m)
    turns = [h.turn for h in episodes if matches(h.turn.content, h.similarity)]
    return ForgetPlan(user_id=user_id, about=topic, memories=list(chosen.values()), turns=turns)


def _same_fact(store: MemoryStore, target: Memory) -> list[Memory]:
    """The note and the versions of it it superseded or was superseded by (sharing its topic words: "PIN 1234"
    before "PIN 8841"). Other notes holding the fact (duplicates, a two-fact note) are found when it is applied."""
    out = {target.id: target}
    every = store.list(target.user_id, include_history=True, limit=100_000).items
    by_id = {m.id: m for m in every}
    s = salient(target.text)
    others = s.topic - s.codes - s.names
    need = min(2, len(others))
    frontier = [target]
    while frontier:
        m = frontier.pop()
        linked = [by_id.get(m.superseded_by or "")] + [x for x in every if x.superseded_by == m.id]
        for x in linked:
            if x is None or x.id in out:
                continue
            shared = others & salient(x.text).topic
            if need and len(shared) >= need:
                out[x.id] = x
                frontier.append(x)
    return list(out.values())


def forget(store: MemoryStore, p: ForgetPlan, *, reason: str, actor: str) -> ForgetReport:
    user_id = check_scope_id(p.user_id)
    key = store.backend.forget_key()
    before_seq = store.backend.last_turn_seq(user_id)
    now = store.clock()
    work = _Work()
    targets = {m.id for m in p.memories}
    notes = [store.get(m.id, user_id) for m in p.memories]  # current texts, in this user's scope
    for m in notes:
        fp = Fingerprint.of(m.text, key, before_seq=before_seq, created_at=now)
        work.fingerprints.append((fp, m.id, "note", text_hash(key, m.text)))
    if p.about:
        fp = Fingerprint.of(p.about, key, before_seq=before_seq, created_at=now)
        if not fp.empty:
            work.fingerprints.append((fp, None, "topic", None))
    fps = [f for f, *_ in work.fingerprints]

    # The turns: the notes' sources, the plan's episodes, and every turn sharing a keyword with what goes (the
    # keyword index stems more loosely than the rule, so it finds every turn the rule can match, and fast).
    source_ids = list(dict.fromkeys(t for m in notes for t in m.source.turn_ids))
    candidates: dict[str, Turn] = {i: t for i, (t, _) in store.backend.turns_by_ids(user_id, source_ids).items()}
    for t in p.turns:
        candidates.setdefault(t.id, t)
    _add_keyword_hits(store, user_id, [m.text for m in notes] + ([p.about] if p.about else []), candidates)
    candidates = {i: t for i, t in candidates.items() if (t.seq or 0) <= before_seq}

    # A source or topic turn the words did not reach loses its clause closest in meaning. What goes of a topic
    # turn, and every clause removed by meaning, is fingerprinted too: its names and numbers go everywhere.
    forced = _fallback_clauses(store, notes, p, candidates, key, fps)
    clauses = {c for cs in forced.values() for c in cs}
    for t in p.turns:
        if t.id in candidates:
            clauses.update(removed_clauses(t.content, key, fps, force=forced.get(t.id, ())))
    for clause in sorted(clauses):
        cfp = Fingerprint.of(clause, key, before_seq=before_seq, created_at=now)
        if not cfp.empty:
            work.fingerprints.append((cfp, None, "clause", None))
    fps = [f for f, *_ in work.fingerprints]
    if clauses:
        before = set(candidates)
        _add_keyword_hits(store, user_id, sorted(clauses), candidates)
        candidates = {i: t for i, t in candidates.items() if i in before or (t.seq or 0) <= before_seq}
    for t in candidates.values():
        content = redact(t.content, key, fps, force=forced.get(t.id, ()))
        error = redact(t.last_error, key, fps) if t.last_error else t.last_error
        if content != t.content or error != t.last_error:
            work.turns[t.id] = (t, content, error)

    # Notes: the targets go; another note holding the fact keeps what else it says.
    deleted, rewritten = [], []
    for m in store.list(user_id, include_history=True, limit=100_000).items:
        if m.id in targets:
            deleted.append(m)
            continue
        if not note_matches(m.text, key, fps):
            continue
        text = redact(m.text, key, fps)
        if text != m.text and _content_left(text):
            rewritten.append((m, text))
        else:
            deleted.append(m)

    vectors = store.embed([c for _, c, _ in work.turns.values()] + [t for _, t in rewritten])
    turn_vecs = vectors[: len(work.turns)]
    note_vecs = vectors[len(work.turns) :]
    report = ForgetReport(
        user_id=user_id,
        memories=[m.id for m in deleted],
        redacted_memories=[m.id for m, _ in rewritten],
        turns=list(work.turns),
        fingerprints=len(work.fingerprints),
    )
    report._replacements = {t.content: c for t, c, _ in work.turns.values()}
    report._replacements.update({m.text: t for m, t in rewritten})
    report._fingerprints = list(fps)
    gone = {m.id for m in deleted}
    with store.backend.transaction() as tx:
        for (t, content, error), vec in zip(work.turns.values(), turn_vecs, strict=True):
            tx.rewrite_turn(user_id, t.id, content, error, vec)
        for (m, text), vec in zip(rewritten, note_vecs, strict=True):
            tx.update_memory(user_id, m.id, {"text": text, "embedding": vec, "updated_at": now})
        for m in deleted:
            tx.delete_memory(user_id, m.id)
        report.history = _scrub_history(store, tx, user_id, key, fps, gone)
        report.feedback = _scrub_feedback(store, tx, user_id, key, fps)
        safe_reason = redact(reason, key, fps) if reason else reason
        events = [
            store._history(m, "forget", safe_reason, actor, text_hash=text_hash(key, m.text)) for m in deleted
        ] + [store._history(m, "redact", safe_reason, actor, text_hash=text_hash(key, m.text)) for m, _ in rewritten]
        tx.add_history(events)
        tx.add_forgotten(
            [
                {
                    "id": fp.id or new_id(),
                    "user_id": user_id,
                    "memory_id": mid,
                    "kind": kind,
                    "fingerprint": json.dumps(fp.to_json()),
                    "text_hash": th,
                    "before_seq": before_seq,
                    "reason": safe_reason,
                    "actor": actor,
                    "created_at": now,
                }
                for fp, mid, kind, th in work.fingerprints
            ],
        )
    # The index's files keep no vector of the old text; the engine's free space is scrubbed.
    store.backend.scrub_user(user_id, refill=True)
    return report


def _add_keyword_hits(store: MemoryStore, user_id: str, texts: list[str], into: dict[str, Turn]) -> None:
    ukey = user_key(user_id)
    for text in texts:
        ids = [i for i, _ in store.backend.episode_keyword_search(ukey, text, 100_000) if i not in into]
        for i, (t, _) in store.backend.turns_by_ids(user_id, ids).items():
            into[i] = t


def _fallback_clauses(
    store: MemoryStore,
    notes: list[Memory],
    p: ForgetPlan,
    candidates: dict[str, Turn],
    key: bytes,
    fps: list[Fingerprint],
) -> dict[str, list[str]]:
    """turn id -> clauses to remove: for each source turn of a note (and each topic turn) that the words left
    unchanged, its clause closest in meaning to the note (or topic), if close enough."""
    wanted: list[tuple[str, str]] = []  # (turn id, what it should lose the meaning of)
    for m in notes:
        wanted += [(tid, m.text) for tid in m.source.turn_ids]
    if p.about:
        wanted += [(t.id, p.about) for t in p.turns]
    jobs: list[tuple[str, str, list[str]]] = []
    for tid, meaning in wanted:
        t = candidates.get(tid)
        if t is None or redact(t.content, key, fps) != t.content:
            continue
        clauses = clause_candidates(t.content)
        if clauses:
            jobs.append((tid, meaning, clauses))
    if not jobs:
        return {}
    texts = list(dict.fromkeys([j[1] for j in jobs] + [c for j in jobs for c in j[2]]))
    vecs = dict(zip(texts, store.embed(texts), strict=True))
    out: dict[str, list[str]] = {}
    for tid, meaning, clauses in jobs:
        sims = [float(vecs[c] @ vecs[meaning]) for c in clauses]
        best = int(np.argmax(sims))
        if sims[best] >= FALLBACK_SIMILARITY:
            out.setdefault(tid, []).append(clauses[best])
    return out


def _scrub_history(
    store: MemoryStore, tx: Transaction, user_id: str, key: bytes, fps: list[Fingerprint], gone: set[str]
) -> int:
    """Events of the removed notes lose their text (a keyed hash stays); others lose the fact's clauses."""
    n = 0
    for r in store.backend.history_rows(user_id):
        fields: dict[str, Any] = {}
        raw = r["metadata"]
        meta = dict(raw) if isinstance(raw, dict) else json.loads(raw) if raw else {}
        for col in ("old_text", "new_text"):
            value = r[col]
            if not value:
                continue
            if r["memory_id"] in gone:
                fields[col] = None
                meta[f"{col}_hash"] = text_hash(key, value)
            else:
                red = redact(value, key, fps)
                if red != value:
                    fields[col] = red
        if r["reason"]:
            red = redact(r["reason"], key, fps)
            if red != r["reason"]:
                fields["reason"] = red
        if fields:
            if any(c in fields and fields[c] is None for c in ("old_text", "new_text")):
                fields["metadata"] = meta
            tx.rewrite_history(user_id, r["id"], fields)
            n += 1
    return n


def _scrub_feedback(store: MemoryStore, tx: Transaction, user_id: str, key: bytes, fps: list[Fingerprint]) -> int:
    n = 0
    for f in store.backend.feedback(user_id):
        if f.comment:
            red = redact(f.comment, key, fps)
            if red != f.comment:
                tx.redact_feedback(user_id, f.id, red)
                n += 1
    return n


__all__ = ["ABOUT_PARAPHRASE", "ABOUT_SIMILARITY", "forget", "guard_import", "plan", "redactor"]


def redactor(store: MemoryStore, report: ForgetReport) -> Callable[[str], str]:
    """A str -> str function that removes what `report`'s forget removed, from copies of the same text kept
    elsewhere (the checkpointed chat state): the rewritten turns by their exact text, then the fact's clauses."""
    key = store.backend.forget_key()
    fps = list(report._fingerprints)
    pairs: dict[str, str] = {}
    for old, new in report._replacements.items():
        pairs[old] = new
        pairs[" ".join(old.split())] = " ".join(new.split())
    ordered = sorted(pairs.items(), key=lambda kv: -len(kv[0]))

    def apply(text: str) -> str:
        for old, new in ordered:
            if old and old in text:
                text = text.replace(old, new)
        return redact(text, key, fps)

    return apply


def guard_import(store: MemoryStore, parsed: ExportFile) -> int:
    """An import (a backup made before a forget) re-applies what its users forgot since: turns said before a forget
    are redacted, notes that held a forgotten fact and predate it are left out, history texts are scrubbed.
    Returns how many records were changed or left out. A fact said after the forget is kept (new information)."""
    guards: dict[str, ForgetGuard | None] = {}

    def guard(user_id: str) -> ForgetGuard | None:
        if user_id not in guards:
            guards[user_id] = store.forget_guard(user_id)
        return guards[user_id]

    changed = 0
    for n, t in enumerate(parsed.turns):
        g = guard(t.user_id)
        if g is not None:
            text = g.redact_as_of(t.content, t.created_at)
            if text != t.content:
                parsed.turns[n] = t.model_copy(update={"content": text})
                changed += 1
    kept = []
    for item in parsed.memories:
        m = item.memory
        g = guard(m.user_id)
        if g is not None and g.blocks_note_as_of(m.text, m.created_at):
            changed += 1
            continue
        kept.append(item)
    parsed.memories = kept
    for n, e in enumerate(parsed.events):
        g = guard(e.user_id)
        if g is None:
            continue
        update = {
            col: g.redact_as_of(getattr(e, col), e.created_at)
            for col in ("old_text", "new_text", "reason")
            if getattr(e, col)
        }
        update = {k: v for k, v in update.items() if v != getattr(e, k)}
        if update:
            parsed.events[n] = e.model_copy(update=update)
            changed += 1
    return changed
