"""The MARK memory builder: extract notes from a turn, resolve each against its neighbours, write.

Two phases, so an LLM failure writes nothing:
  1. plan (LLM calls): extract candidate notes (combined call, or the paper's three agents), clean them,
     and decide for each what it is to the nearest existing memories: same (confirm), replaces (supersede),
     conflicts (supersede, or keep as disputed when the new source is less trusted), unrelated (add);
  2. apply (store writes only), each decision recorded in history with its reason.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from mark_agents.config import AgentConfig
from mark_agents.fitting import CHARS_PER_TOKEN, Cut, fit_turns
from mark_agents.llm import LLMClient, LLMContextExceeded, LLMOutputError, Usage, UsageMeter, estimate_tokens
from mark_agents.prompts import (
    AGENT_SYSTEM,
    COMBINED_SYSTEM,
    RELATION_SYSTEM,
    AgentNotes,
    ExtractedNote,
    Extraction,
    Relation,
    exchange_text,
    relation_text,
)
from memory_store import (
    AsyncMemoryStore,
    MemoryChange,
    MemoryKind,
    MemoryStatus,
    MemoryStore,
    NewMemory,
    Source,
    Turn,
)
from memory_store.forgetting import ForgetGuard
from memory_store.text import NOTE_WORDS, STOPWORDS

log = logging.getLogger(__name__)
_WORD = re.compile(r"[a-z0-9]+")
_STOP = STOPWORDS | NOTE_WORDS
ACTOR = "mark-builder"
_DECODER = json.JSONDecoder()
_MAX_JSON_STARTS = 50
_EXTRACT_MAX_TOKENS = 400
#: Never cut an exchange below this many characters, whatever the window arithmetic says.
_MIN_EXCHANGE_CHARS = 1000
#: Tries with a halved budget when the endpoint still says the exchange does not fit.
_FIT_ATTEMPTS = 3
#: A short note that only reacts ("Sorry to hear that!", "Sounds great.") is small talk, not a memory.
_SMALL_TALK = re.compile(
    r"^(sorry|thanks|thank you|congrats|congratulations|wow|cool|nice|great|awesome|good luck|glad|happy|bye|"
    r"see you|sounds|good to|can't wait|love it)\b",
    re.IGNORECASE,
)
#: The words the prompt asks notes to be framed with: they never make a note an echo of the instructions.
_FRAMING = {"assistant", "recommended", "suggested", "advised", "planned", "answered", "told", "accepted", "agreed"}
#: A note that only restates what the user asked is not a durable memory.
_RESTATES_QUESTION = re.compile(
    r"\b(wants? to know|is asking|asked (about|for|what|how|if|whether)|would like to know)\b"
)


class Decision(BaseModel):
    """What to do with one extracted note."""

    note: ExtractedNote
    action: str  # add | confirm | supersede | dispute | skip
    target_id: str | None = None
    reason: str


class BuildReport(BaseModel):
    user_id: str
    added: list[str] = Field(default_factory=list)
    confirmed: list[str] = Field(default_factory=list)
    superseded: list[str] = Field(default_factory=list)  # ids of the old memories
    disputed: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)  # note texts dropped, with why
    #: Turns the extractor saw shortened because they did not fit the model's context window.
    cuts: list[Cut] = Field(default_factory=list)
    decisions: list[Decision] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


#: What a copied message opens with that carries nothing: "Hey Gina!", "Yes,", "Cool, Sam!" (an interjection, maybe
#: a capitalised name, then punctuation).
_OPENER = re.compile(
    r"^(?:(?i:hi|hello|hey|good (?:morning|afternoon|evening)|thanks|thank you|sorry|wow|woah|cool|yeah|yes|yep|"
    r"ok|okay|oh|great|awesome|nice|well|congrats|congratulations)(?:,?\s+[A-Z][a-z]+)?\s*[!.,:;]+\s*)+"
)
#: The user's first-person subject words (straight or curly apostrophe) and what they become in a note about the
#: user, most specific first: written once for both passes below.
_FIRST_PERSON_SUBJECTS = [
    (r"I(?: am|'m|’m)", "the user is"),
    (r"I(?:'ve|’ve)", "the user has"),
    (r"I(?:'ll|’ll)", "the user will"),
    (r"I(?:'d|’d)", "the user would"),
    (r"I", "the user"),
    (r"[Mm]y", "the user's"),
]
#: A note that starts in the first person: its opening word, then "my" and "me" anywhere.
_FIRST_PERSON = [(re.compile(rf"^{words}\b"), _capitalised(repl)) for words, repl in _FIRST_PERSON_SUBJECTS] + [
    (re.compile(r"\bmy\b"), "the user's"),
    (re.compile(r"\bme\b"), "the user"),
]
#: First-person words inside a note that copies the user ("... so I'm gonna start my own business").
_INNER_FIRST_PERSON = [(re.compile(rf"\b{words}\b"), repl) for words, repl in _FIRST_PERSON_SUBJECTS] + [
    (re.compile(r"\bmyself\b"), "themselves"),
    (re.compile(r"\bme\b"), "the user"),
]
_HAS_FIRST_PERSON = re.compile(r"\b(I|I'm|I’m|I've|I’ve|I'll|I’ll|I'd|I’d|[Mm]y|me|myself)\b")
#: Sentences that start without their subject ("Lost my job yesterday."): a past tense gets "The user" before it.
_PAST_VERBS = set(
    "lost got went took made found had began bought sold left met won saw came gave became built ran wrote read "
    "moved started joined finished quit signed tried adopted visited launched opened".split()
)


def third_person(text: str, kind: str = "user_question") -> str:
    """A note as the user's sentence ("Hi! My dog is called Biscuit.") becomes a note about the user ("The user's
    dog is called Biscuit."): small models copy the user's words despite the instructions.

    A note of the assistant's advice (``llm_response``) is only converted where it starts in the first person: its
    inner "I" may be the assistant speaking.
    """
    text = _capitalised(_OPENER.sub("", text).strip())
    if not text:
        return text
    if re.match(r"^(I|I'm|I've|My)\b", text):
        verb = re.match(r"^I ([a-z]+)\b", text)
        if verb and verb.group(1) in _PRESENT_VERBS:
            text = "The user " + _third_singular(verb.group(1)) + text[verb.end() :]
        for pattern, repl in _FIRST_PERSON:
            text = pattern.sub(repl, text)
    if kind == "llm_response" or text.lower().startswith("the assistant") or not _HAS_FIRST_PERSON.search(text):
        return text
    verb = re.match(r"^([A-Z][a-z]+)\b", text)
    if verb and verb.group(1).lower() in _PAST_VERBS:
        text = "The user " + verb.group(1).lower() + text[verb.end() :]
    for pattern, repl in _INNER_FIRST_PERSON:
        text = pattern.sub(repl, text)
    return text


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'“A-Z0-9])")
_PRONOUN_START = re.compile(r"^(it|it's|it’s|that|that's|this|these|those|they|they're|he|she|which)\b", re.I)


def note_sentences(text: str) -> list[str]:
    """The statements of a note that copies a whole message: questions dropped, openers ("Hey Sam!") cut, and a
    sentence that starts with a pronoun kept with the one before it (it is about the same thing)."""
    pieces: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        sentence = _capitalised(_OPENER.sub("", sentence.strip()).strip())
        if not sentence or sentence.endswith("?"):
            continue
        if pieces and _PRONOUN_START.match(sentence):
            pieces[-1] += " " + sentence
        else:
            pieces.append(sentence)
    return pieces


def split_sentences(notes: list[ExtractedNote]) -> list[ExtractedNote]:
    """One note per statement: a model that copies a message ("Cool, Sam! I love jazz. What's your fave?") gives
    its statements, not a question-ending note that cleaning would drop whole. All-question notes stay as they are
    (cleaning reports them)."""
    out: list[ExtractedNote] = []
    for note in notes:
        pieces = note_sentences(note.text)
        out += [ExtractedNote(kind=note.kind, text=p) for p in pieces] if pieces else [note]
    return out


#: Verbs conjugated for "The user": common present-tense verbs of notes (anything else, a past tense
#: like "moved", reads correctly unchanged).
_PRESENT_VERBS = set(
    "live work like love have do go want need prefer hate study play own speak use teach run enjoy drive eat drink "
    "know think plan ride read write cook visit walk swim watch listen keep feel collect practise practice "
    "volunteer attend take make teach paint sing dance travel".split()
)
_IRREGULAR = {"have": "has", "do": "does", "go": "goes", "be": "is"}


def _third_singular(verb: str) -> str:
    if verb in _IRREGULAR:
        return _IRREGULAR[verb]
    if verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if verb.endswith("y") and len(verb) > 2 and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


_JOINED_CLAUSES = re.compile(r"(?:;|,? and (?=I |I'm |my |My |the user |The user |he |she ))")


def split_facts(notes: list[ExtractedNote]) -> list[ExtractedNote]:
    """One fact per note: "I live in Denver and I work as a nurse." becomes two notes, so superseding one keeps
    the other. Only clauses that each name their subject are split ("likes tea and coffee" stays whole)."""
    out: list[ExtractedNote] = []
    for note in notes:
        parts = [p.strip(" ,.") for p in _JOINED_CLAUSES.split(note.text) if p.strip(" ,.")]
        if len(parts) < 2:
            out.append(note)
            continue
        # A clause with no fact of its own ("..., and the user accepted") stays with the one before it.
        joined: list[str] = []
        for p in parts:
            if joined and len(content_words(p)) < 2:
                joined[-1] += ", and " + p
            else:
                joined.append(p)
        if len(joined) < 2:
            out.append(note)
            continue
        subject = "The user" if note.text.lower().startswith("the user") else None
        for p in joined:
            if subject and re.match(r"^(he|she)\s", p, re.IGNORECASE):
                p = subject + " " + p.split(" ", 1)[1]
            out.append(ExtractedNote(kind=note.kind, text=p[0].upper() + p[1:] + "."))
    return out


def content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1}


def _normal(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".!")


def dictated_texts(messages: Iterable[str]) -> set[str]:
    """The strings inside JSON objects the user wrote (normalised).

    A message shaped like the extractor's answer is data to take notes from: a note that copies one of its
    strings word for word was dictated by the user, not extracted, and is dropped.
    """
    found: set[str] = set()
    for message in messages:
        starts = [i for i, ch in enumerate(message) if ch == "{"][:_MAX_JSON_STARTS]
        for start in starts:
            try:
                value, _ = _DECODER.raw_decode(message, start)
            except ValueError:
                continue
            found.update(_normal(s) for s in _strings(value) if len(s) >= 8)
    return found


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


class MemoryBuilder:
    def __init__(
        self, store: MemoryStore | AsyncMemoryStore, llm: LLMClient, config: AgentConfig | None = None
    ) -> None:
        self.astore = store if isinstance(store, AsyncMemoryStore) else AsyncMemoryStore(store=store)
        self.store = self.astore.sync
        self.llm = llm
        self.config = config or AgentConfig()

    async def build(self, turns: list[Turn], *, meter: UsageMeter | None = None) -> BuildReport:
        """Turn raw turns (one user, usually one exchange) into memories. Raises LLM errors before any write."""
        if not turns:
            raise ValueError("no turns to build from")
        user_id = turns[0].user_id
        local = UsageMeter()
        report = BuildReport(user_id=user_id)
        notes = await self._notes(turns, local, report)
        planned = await self._plan(notes, user_id, local)
        report.usage = local.total
        if meter is not None:
            meter.record(local.total, "remember")
        await self._apply(planned, turns, report)
        return report

    async def extract_notes(
        self, turns: list[Turn], *, meter: UsageMeter | None = None
    ) -> tuple[list[ExtractedNote], BuildReport]:
        """The notes :meth:`build` would resolve for these turns, and the report of what was dropped and why.

        Writes nothing: this is the extraction alone, for ``mark bench extraction`` to score.
        """
        if not turns:
            raise ValueError("no turns to extract from")
        local = UsageMeter()
        report = BuildReport(user_id=turns[0].user_id)
        notes = await self._notes(turns, local, report)
        report.usage = local.total
        if meter is not None:
            meter.record(local.total, "extract")
        return notes, report

    # -- phase 1: extraction ----------------------------------------------------------------------------

    async def _notes(self, turns: list[Turn], meter: UsageMeter, report: BuildReport) -> list[ExtractedNote]:
        """Extraction (the LLM call) then cleaning: the candidate notes of the turns, less what the user forgot."""
        notes = await self._extract(turns, meter, report)
        guard = await self.astore.forget_guard(turns[0].user_id)
        return self._clean(notes, turns, report, guard)

    async def _extract(self, turns: list[Turn], meter: UsageMeter, report: BuildReport) -> list[ExtractedNote]:
        """The notes of an exchange, its turns cut to fit the model's context (halved again if it still refuses)."""
        spoken = [(t.id, t.role, t.content) for t in turns if t.role in ("user", "assistant")]
        user_text = " ".join(c for _, r, c in spoken if r == "user")
        known = []
        if user_text.strip():
            hits = await self.astore.search(user_text[:2000], turns[0].user_id, limit=5)
            known = [h.memory.text for h in hits]
        budget = self._exchange_budget(known)
        for attempt in range(1, _FIT_ATTEMPTS + 1):
            pairs, cuts = fit_turns(spoken, budget)
            try:
                notes = await self._call_extractor(exchange_text(pairs, known), meter)
            except LLMContextExceeded:
                if attempt == _FIT_ATTEMPTS:
                    raise
                budget = sum(len(text) for _, text in pairs) // 2
                log.warning("the exchange did not fit the model's context; cutting it to %d characters", budget)
                continue
            report.cuts = cuts
            return notes
        raise AssertionError("unreachable")

    def _exchange_budget(self, known: list[str]) -> int:
        """Characters of conversation the extractor may see: the configured cap, within the model's window."""
        budget = self.config.extract_max_chars
        window = getattr(self.llm, "context_window", None)  # duck-typed clients (evaluator fakes) may lack it
        if window:
            system = max([COMBINED_SYSTEM, *AGENT_SYSTEM.values()], key=len)
            reserved = estimate_tokens(system) + estimate_tokens("\n".join(known)) + _EXTRACT_MAX_TOKENS + 256
            budget = min(budget, max(_MIN_EXCHANGE_CHARS, (window - reserved) * CHARS_PER_TOKEN))
        return budget

    async def _call_extractor(self, prompt: str, meter: UsageMeter) -> list[ExtractedNote]:
        if self.config.extraction_mode == "combined":
            out, _ = await self.llm.structured(
                [{"role": "system", "content": COMBINED_SYSTEM}, {"role": "user", "content": prompt}],
                Extraction,
                max_tokens=_EXTRACT_MAX_TOKENS,
                meter=meter,
                label="extract",
            )
            return out.memories
        notes: list[ExtractedNote] = []
        for kind, system in AGENT_SYSTEM.items():  # the paper's order: residual, user-question, llm-response
            out, _ = await self.llm.structured(
                [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
                AgentNotes,
                max_tokens=300,
                meter=meter,
                label=f"extract-{kind}",
            )
            notes += [ExtractedNote(kind=kind, text=t) for t in out.notes]
        return notes

    def _clean(
        self, notes: list[ExtractedNote], turns: list[Turn], report: BuildReport, guard: ForgetGuard | None = None
    ) -> list[ExtractedNote]:
        """Drop what small models get wrong: questions, echoes of the prompt, facts absent from the exchange; and
        a fact the user forgot, re-derived from what was said before they forgot it (`guard`; a new statement
        after the forget is new information and is kept)."""
        newest = max((t.seq for t in turns if t.seq is not None), default=None)
        exchange = content_words(" ".join(t.content for t in turns))
        assistant_lines = [" ".join(t.content.lower().split()) for t in turns if t.role == "assistant"]
        user_lines = [" ".join(t.content.lower().split()) for t in turns if t.role == "user"]
        user_words = content_words(" ".join(t.content for t in turns if t.role == "user"))
        instructions = content_words(COMBINED_SYSTEM + " ".join(AGENT_SYSTEM.values())) - exchange - _FRAMING
        dictated = dictated_texts(t.content for t in turns if t.role == "user")
        kept: list[ExtractedNote] = []
        seen: set[str] = set()
        for note in split_facts(split_sentences(notes)):
            # Messages reach the extractor as quoted strings: a note copied from one may keep the quotes.
            text = third_person(" ".join(note.text.split()).strip('"“”'), note.kind)
            words = content_words(text)
            why = None
            if guard is not None and guard.blocks_candidate(text, newest):
                why = "forgotten"
            elif len(text) < 8 or not words:
                why = "too short"
            elif _normal(text) in dictated:
                why = "copied from structured text the user wrote, not extracted"
            elif text.endswith("?") or _RESTATES_QUESTION.search(text.lower()):
                why = "a question, not a fact"
            elif len(words & instructions) > len(words & exchange):
                why = "echoes the instructions"
            elif note.kind == "user_question" and len(words & user_words) * 2 < len(words):
                why = "not grounded in what the user said"
            elif not words & exchange:
                why = "not grounded in the exchange"
            elif _SMALL_TALK.match(text) and len(words) <= 4:
                why = "small talk"
            elif text.lower() in seen:
                why = "repeated"
            elif " ".join(text.lower().split()) in user_lines and not text.lower().startswith("the user"):
                why = "copies the user's words, not a note about the user"
            elif (
                not text.lower().startswith("the assistant")
                and any(text.lower().rstrip(".!") in line for line in assistant_lines)
                and not any(text.lower().rstrip(".!") in line for line in user_lines)
            ):
                why = "repeats the assistant word for word, not a note about the user"
            if why:
                # A forgotten fact is not repeated, even in a report.
                report.skipped.append(f"{'[a forgotten fact]' if why == 'forgotten' else text} ({why})")
                continue
            seen.add(text.lower())
            kept.append(ExtractedNote(kind=note.kind, text=text))
        return kept[: self.config.max_notes_per_turn]

    # -- phase 1: resolution ------------------------------------------------------------------------------

    async def _plan(
        self, notes: list[ExtractedNote], user_id: str, meter: UsageMeter
    ) -> list[tuple[Decision, np.ndarray]]:
        """A decision for each note, with the note's vector (the writes store it rather than embed it again)."""
        if not notes:
            return []
        vectors = await self.astore.embed([n.text for n in notes])
        planned: list[tuple[Decision, np.ndarray]] = []
        batch_vectors: list[np.ndarray] = []
        for note, vec in zip(notes, vectors, strict=True):
            # Two notes of this same turn saying the same thing: keep the first.
            if any(float(v @ vec) >= self.config.duplicate_similarity for v in batch_vectors):
                planned.append((Decision(note=note, action="skip", reason="duplicate within the turn"), vec))
                continue
            batch_vectors.append(vec)
            planned.append((await self._decide(note, vec, user_id, meter), vec))
        return planned

    async def _decide(self, note: ExtractedNote, vec: np.ndarray, user_id: str, meter: UsageMeter) -> Decision:
        hits = await self.astore.search(
            note.text,
            user_id,
            limit=self.config.max_related,
            mode="dense",
            explain=True,
            query_embedding=vec,
        )
        trust = self.config.trust_by_kind.get(note.kind, 0.6)
        for hit in hits:
            sim = hit.explain.similarity if hit.explain else 0.0
            old = hit.memory
            if sim >= self.config.duplicate_similarity:
                return Decision(note=note, action="confirm", target_id=old.id, reason=f"same fact (cosine {sim:.2f})")
            if sim < self.config.related_similarity:
                continue
            try:
                rel, _ = await self.llm.structured(
                    [
                        {"role": "system", "content": RELATION_SYSTEM},
                        {"role": "user", "content": relation_text(old.text, note.text)},
                    ],
                    Relation,
                    max_tokens=60,
                    meter=meter,
                    label="resolve",
                )
            except LLMOutputError as exc:
                log.warning("relation check failed for %r; treating as unrelated: %s", note.text, exc)
                continue
            why = f"{rel.relation} (cosine {sim:.2f}): {rel.reason}".strip().rstrip(":")
            if rel.relation == "same":
                return Decision(note=note, action="confirm", target_id=old.id, reason=why)
            if rel.relation == "replaces":
                return Decision(note=note, action="supersede", target_id=old.id, reason=f"fact changed; {why}")
            if rel.relation == "conflicts":
                if trust + 1e-9 < old.trust:
                    return Decision(
                        note=note,
                        action="dispute",
                        target_id=old.id,
                        reason=f"contradicts a more trusted memory ({trust:.2f} < {old.trust:.2f}); {why}",
                    )
                return Decision(
                    note=note, action="supersede", target_id=old.id, reason=f"contradiction, newer wins; {why}"
                )
        return Decision(note=note, action="add", reason="new information")

    # -- phase 2: writes ----------------------------------------------------------------------------------

    async def _apply(self, planned: list[tuple[Decision, np.ndarray]], turns: list[Turn], report: BuildReport) -> None:
        """The extraction's writes: every decision but the skips, in one store transaction (`MemoryStore.apply`),
        so a crash or a failed write leaves none of them half done."""
        first = turns[0]
        source = Source(conversation_id=first.session_id, turn_ids=[t.id for t in turns])
        cut_note = "; ".join(c.describe() for c in report.cuts)
        changes: list[MemoryChange] = []
        for d, vec in planned:
            if cut_note:
                d = d.model_copy(update={"reason": f"{d.reason} (extracted from a shortened text: {cut_note})"})
            report.decisions.append(d)
            if d.action == "skip":
                report.skipped.append(f"{d.note.text} ({d.reason})")
                continue
            new = NewMemory(
                text=d.note.text,
                user_id=first.user_id,
                kind=MemoryKind(d.note.kind),
                agent_id=first.agent_id,
                session_id=first.session_id,
                trust=self.config.trust_by_kind.get(d.note.kind, 0.6),
                source=source,
            )
            changes.append(
                MemoryChange(action=d.action, memory=new, target_id=d.target_id, reason=d.reason, embedding=vec)
            )
        for done in await self.astore.apply(first.user_id, changes, actor=ACTOR):
            if done.action == "confirm":
                report.confirmed.append(done.memory.id)
            elif done.action == "supersede":
                report.superseded.append(done.target_id or "")
            elif done.action == "dispute":
                report.disputed.append(done.memory.id)
            else:
                report.added.append(done.memory.id)


__all__ = ["BuildReport", "Decision", "MemoryBuilder", "MemoryStatus"]
