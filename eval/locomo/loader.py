"""Reading LoCoMo's own files into the evaluator's model: one dialogue = one haystack, one session = one
conversation, every ``qa`` entry a question asked against the whole dialogue.

Two layouts, recognised by content: the published ``locomo10.json`` (a list of samples, each with
``sample_id``, ``conversation`` holding ``speaker_a``, ``speaker_b``, ``session_N`` and ``session_N_date_time``,
and ``qa``), and the flat one-dialogue layout (those keys at the top level, no ``sample_id``), alone or as a
list. Turns keep the speaker's name, the session its date; a shared photo becomes ``[shares a photo: caption]``.
Evidence ``dia_id``\\s ("D3:5": session 3, turn 5) are mapped to haystack message ids through the turns' own
``dia_id`` fields. Anything unusable raises :class:`~memory_store.errors.InvalidInput` naming the file and the
problem; an evidence id that names no turn is a warning (the released file has a few), not an error.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mark_eval.convomem.schema import Conversation, Haystack, Message, Question, TestCase
from mark_eval.locomo.categories import ADVERSARIAL, CATEGORY_NAMES, NOT_MENTIONED
from memory_store.errors import InvalidInput

_SESSION = re.compile(r"^session_(\d+)$")
_DIA_ID = re.compile(r"D\s*(\d+)\s*:\s*0*(\d+)")
_DATE_FORMATS = ("%I:%M %p on %d %B, %Y", "%I:%M %p on %d %B %Y", "%I:%M %p on %d %b, %Y", "%d %B, %Y", "%d %B %Y")


class Dialogue(BaseModel):
    """One LoCoMo sample, converted: its sessions as conversations and its questions with evidence."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    sample_id: str
    speaker_a: str
    speaker_b: str
    conversations: list[Conversation]
    questions: list[Question]
    #: question id -> haystack message ids (``conv:msg``) of its evidence turns
    evidence_mids: dict[str, list[str]] = Field(default_factory=dict)
    #: question id -> the evidence as LoCoMo writes it (``dia_id``\\s)
    evidence_dia_ids: dict[str, list[str]] = Field(default_factory=dict)

    def to_case(self) -> TestCase:
        """The whole dialogue as one haystack (context size = number of sessions) with all its questions."""
        return TestCase(
            context_size=len(self.conversations),
            conversation_ids=[c.cid for c in self.conversations],
            haystack=Haystack.build(self.conversations),
            questions=list(self.questions),
            evidence_mids=dict(self.evidence_mids),
        )


class LocomoData(BaseModel):
    dialogues: list[Dialogue]
    warnings: list[str] = Field(default_factory=list)


def parse_date(text: str | None) -> datetime | None:
    """LoCoMo writes "4:04 pm on 20 January, 2023"; anything else is kept as text only."""
    if not text:
        return None
    cleaned = re.sub(r"\s+", " ", text.strip())
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(cleaned, fmt)
        except ValueError:
            continue
    return None


def load_locomo(path: Path) -> LocomoData:
    """Load a LoCoMo file (either layout) or a directory of them (every ``*.json``, sorted)."""
    if not path.exists():
        raise InvalidInput(f"{path}: no such file or directory")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.json") if p.is_file())
    if not files:
        raise InvalidInput(f"{path}: no .json files found")
    data = LocomoData(dialogues=[])
    seen: dict[str, Path] = {}
    for file in files:
        for dialogue in _load_file(file, data.warnings):
            if dialogue.sample_id in seen:
                raise InvalidInput(f"{file}: dialogue {dialogue.sample_id!r} is also in {seen[dialogue.sample_id]}")
            seen[dialogue.sample_id] = file
            data.dialogues.append(dialogue)
    if not any(d.questions for d in data.dialogues):
        raise InvalidInput(f"{path}: no questions found (every dialogue has an empty 'qa')")
    return data


def _load_file(file: Path, warnings: list[str]) -> list[Dialogue]:
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{file}: not UTF-8 text ({exc.reason})") from None
    if not text.strip():
        raise InvalidInput(f"{file}: empty file")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{file}: malformed JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    samples = payload if isinstance(payload, list) else [payload]
    if not samples:
        raise InvalidInput(f"{file}: empty list (expected LoCoMo dialogues)")
    out = []
    for i, sample in enumerate(samples):
        where = f"{file}: element {i}" if isinstance(payload, list) else str(file)
        if not isinstance(sample, dict):
            raise InvalidInput(f"{where}: expected a LoCoMo dialogue (an object), got {type(sample).__name__}")
        default_id = file.stem if len(samples) == 1 else f"{file.stem}-{i}"
        out.append(_dialogue(sample, default_id, where, warnings))
    return out


def _dialogue(sample: dict[str, Any], default_id: str, where: str, warnings: list[str]) -> Dialogue:
    if isinstance(sample.get("conversation"), dict):
        conv = sample["conversation"]
    elif "speaker_a" in sample or "speaker_b" in sample or any(_SESSION.match(str(k)) for k in sample):
        conv = sample
    else:
        raise InvalidInput(
            f"{where}: not a LoCoMo dialogue (expected 'conversation' with the sessions, or 'speaker_a', "
            "'speaker_b' and 'session_N' at the top level)"
        )
    sample_id = str(sample.get("sample_id") or default_id)
    where = f"{where}: dialogue {sample_id}"
    speaker_a = _name(conv, "speaker_a", where)
    speaker_b = _name(conv, "speaker_b", where)
    numbers = sorted(int(m.group(1)) for key in conv if (m := _SESSION.match(key)))
    if not numbers:
        raise InvalidInput(f"{where}: no sessions (expected keys session_1, session_2, ...)")
    conversations: list[Conversation] = []
    positions: dict[tuple[int, int], str] = {}  # (session, turn) from the dia_id -> message id
    texts: dict[str, str] = {}  # message id -> text
    for ci, n in enumerate(numbers):
        turns = conv[f"session_{n}"]
        if not isinstance(turns, list):
            raise InvalidInput(f"{where}: session_{n} is not a list of turns")
        date = conv.get(f"session_{n}_date_time")
        if date is not None and not isinstance(date, str):
            raise InvalidInput(f"{where}: session_{n}_date_time is not a string")
        messages = []
        for mi, turn in enumerate(turns):
            messages.append(_message(turn, speaker_a, f"{where}: session_{n}[{mi}]"))
            dia = _DIA_ID.fullmatch(str(turn.get("dia_id", "")).strip())
            if dia is None:
                raise InvalidInput(
                    f"{where}: session_{n}[{mi}]: dia_id {turn.get('dia_id')!r} is not like 'D{n}:{mi + 1}'"
                )
            key = (int(dia.group(1)), int(dia.group(2)))
            if key in positions:
                warnings.append(f"{where}: dia_id {turn['dia_id']} appears twice; the first is used")
            else:
                positions[key] = f"{ci}:{mi}"
                texts[f"{ci}:{mi}"] = messages[-1].text
        conversations.append(
            Conversation(messages=messages, id=f"{sample_id}:session_{n}", date=date, started_at=parse_date(date))
        )
    qa = sample.get("qa", conv.get("qa"))
    if qa is None:
        raise InvalidInput(f"{where}: no 'qa' (the questions)")
    if not isinstance(qa, list):
        raise InvalidInput(f"{where}: 'qa' is not a list")
    dialogue = Dialogue(
        sample_id=sample_id, speaker_a=speaker_a, speaker_b=speaker_b, conversations=conversations, questions=[]
    )
    for i, entry in enumerate(qa):
        _add_question(dialogue, entry, i, positions, texts, f"{where}: qa[{i}]", warnings)
    return dialogue


def _name(conv: dict[str, Any], key: str, where: str) -> str:
    value = conv.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{where}: '{key}' is missing or not a name")
    return value.strip()


def _message(turn: Any, speaker_a: str, where: str) -> Message:
    if not isinstance(turn, dict):
        raise InvalidInput(f"{where}: a turn must be an object with 'speaker', 'dia_id' and 'text'")
    speaker, text = turn.get("speaker"), turn.get("text")
    if not isinstance(speaker, str) or not speaker.strip():
        raise InvalidInput(f"{where}: turn has no 'speaker'")
    if not isinstance(text, str):
        raise InvalidInput(f"{where}: turn has no 'text'")
    caption = turn.get("blip_caption")
    if isinstance(caption, str) and caption.strip():
        text = f"{text} [shares a photo: {caption.strip()}]".strip()
    # The role is for methods that need one (speaker_a plays the user); prompts show the name.
    role = "user" if speaker.strip() == speaker_a else "assistant"
    return Message(speaker=role, text=text, name=speaker.strip())


def _evidence_ids(raw: Any, where: str) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise InvalidInput(f"{where}: 'evidence' is not a list of dia_ids")
    return [str(e) for e in raw]


def _add_question(
    dialogue: Dialogue,
    entry: Any,
    index: int,
    positions: dict[tuple[int, int], str],
    texts: dict[str, str],
    where: str,
    warnings: list[str],
) -> None:
    if not isinstance(entry, dict):
        raise InvalidInput(f"{where}: expected an object with 'question', 'answer', 'evidence', 'category'")
    question = entry.get("question")
    if not isinstance(question, str) or not question.strip():
        raise InvalidInput(f"{where}: empty or missing 'question'")
    raw_category = entry.get("category")
    try:
        number = int(raw_category)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        number = 0
    if number not in CATEGORY_NAMES:
        raise InvalidInput(f"{where}: category {raw_category!r} is not one of 1-5")
    category = CATEGORY_NAMES[number]
    if category == ADVERSARIAL:
        answer = NOT_MENTIONED
        trap = entry.get("adversarial_answer", entry.get("answer"))
        distractor = None if trap is None else str(trap)
    else:
        if entry.get("answer") is None or not str(entry["answer"]).strip():
            raise InvalidInput(f"{where}: category {number} question without an 'answer'")
        answer, distractor = str(entry["answer"]).strip(), None
    dia_ids = _evidence_ids(entry.get("evidence"), where)
    mids: list[str] = []
    for dia in dia_ids:
        found = _DIA_ID.findall(dia)
        if not found:
            warnings.append(f"{where}: evidence {dia!r} is not a dia_id; ignored")
        for session, turn in found:
            mid = positions.get((int(session), int(turn)))
            if mid is None:
                warnings.append(f"{where}: evidence {dia!r} names no turn of the dialogue; ignored")
            elif mid not in mids:
                mids.append(mid)
    conv_ids = sorted({dialogue.conversations[int(m.split(":")[0])].cid for m in mids})
    qid = Question.make_id(category, question, answer, [dialogue.sample_id, f"qa{index}", *dia_ids], conv_ids)
    q = Question(
        qid=qid,
        category=category,
        evidence_count=len(mids),
        question=question.strip(),
        answer=answer,
        evidence_texts=tuple(texts[m] for m in mids),
        evidence_conversation_ids=tuple(conv_ids),
        source=dialogue.sample_id,
        distractor=distractor,
    )
    dialogue.questions.append(q)
    dialogue.evidence_mids[qid] = mids
    dialogue.evidence_dia_ids[qid] = dia_ids


def select(data: LocomoData, categories: set[str] | None = None, limit: int | None = None) -> list[TestCase]:
    """One test case per dialogue with the chosen questions (``limit`` per category of each dialogue, in file
    order); dialogues left with no question are dropped."""
    cases = []
    for dialogue in data.dialogues:
        case = dialogue.to_case()
        taken: dict[str, int] = {}
        kept = []
        for q in case.questions:
            if categories is not None and q.category not in categories:
                continue
            if limit is not None and taken.get(q.category, 0) >= limit:
                continue
            taken[q.category] = taken.get(q.category, 0) + 1
            kept.append(q)
        if kept:
            case.questions = kept
            case.evidence_mids = {q.qid: case.evidence_mids[q.qid] for q in kept}
            cases.append(case)
    return cases
