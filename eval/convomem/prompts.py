"""Every prompt of the benchmark: one answer skeleton shared by all methods, the judges, the extractors.

The wording paraphrases ConvoMem's (``MemoryPromptUtils``, ``LongContextMemoryAnswerer``,
``AnsweringEvaluation``); the grading-awareness block is given to every method, as the paper's comparison
requires. Bump :data:`PROMPT_VERSION` when any text here changes: it is recorded with every result row.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

PROMPT_VERSION = "convomem-py-1"

SYSTEM = (
    "You are a helpful assistant with a long-term memory of your earlier conversations with the user. "
    "You answer the user's question from that history."
)

GRADING_BLOCK = """How your answer will be graded:
1. It must contain all the essential facts that answer the question.
2. Completeness with transparency: answer the parts you can, and say plainly which parts you cannot \
(for example "You told me X, but you never mentioned Y").
3. Factual correctness: use only what the history says.
4. Synthesis: when several pieces of information matter, combine them sensibly.
5. Directness and honesty: never guess. If nothing relevant is known, say \
"I don't have any information about that."."""

SELF_REFERENCE = 'In the history, "I", "me" and "my" in the user\'s messages refer to the user asking you now.'


class ContextKind(StrEnum):
    """How the selected context is introduced; the rest of the answer prompt is identical for all methods."""

    HISTORY = "history"
    EXCERPTS = "excerpts"
    MEMORIES = "memories"
    EXTRACTED = "extracted"


class PromptProfile(BaseModel):
    """The wording of the answer prompt for one benchmark. Every method of a run uses the same profile
    (``AnswererContext.prompts``): ConvoMem's is a user talking to an assistant about themselves, LoCoMo's a
    reader answering about two people from their dated conversations."""

    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    system: str
    #: what follows each kind's introduction (self-reference note, how to read dates ...)
    note: str
    grading: str
    intro: dict[ContextKind, tuple[str, str]]
    ask: str = "Based on all the information above, answer the question completely."


_INTRO: dict[ContextKind, tuple[str, str]] = {
    ContextKind.HISTORY: (
        "Below is the complete history of your conversations with the user, oldest first. Use all "
        "relevant information in it.",
        "CONVERSATION HISTORY",
    ),
    ContextKind.EXCERPTS: (
        "Below are the excerpts of your conversations with the user that matter most for this question, "
        "oldest first. Use all relevant information in them.",
        "CONVERSATION EXCERPTS",
    ),
    ContextKind.MEMORIES: (
        "Below are the memories you kept from your conversations with the user. Use all of them that are relevant.",
        "MEMORIES",
    ),
    ContextKind.EXTRACTED: (
        "Below is the information extracted from your conversations with the user for this question.",
        "EXTRACTED INFORMATION",
    ),
}

CONVOMEM_PROMPTS = PromptProfile(
    name="convomem",
    version=PROMPT_VERSION,
    system=SYSTEM,
    note=SELF_REFERENCE,
    grading=GRADING_BLOCK,
    intro=_INTRO,
)

EMPTY_CONTEXT = "(nothing was found)"


def answer_messages(
    question: str, context: str, kind: ContextKind, profile: PromptProfile = CONVOMEM_PROMPTS
) -> list[dict[str, str]]:
    """The answer prompt: same skeleton for every method, only the context block differs."""
    intro, header = profile.intro[kind]
    body = (
        f"{intro}\n{profile.note}\n\n{profile.grading}\n\n"
        f"=== {header} ===\n{context.strip() or EMPTY_CONTEXT}\n=== END OF {header} ===\n\n"
        f"{profile.ask}\n"
        f"Question: {question}\nAnswer:"
    )
    return [{"role": "system", "content": profile.system}, {"role": "user", "content": body}]


# --- extraction (ConvoMem's extracted_context / block_based helper step) ------------------------------

NO_INFO_SENTINEL = "No information is relevant."

EXTRACT_SYSTEM = "You extract information from conversation transcripts. You never answer the question itself."


def extract_messages(question: str, transcript: str) -> list[dict[str, str]]:
    """Helper-model prompt: quote everything possibly relevant to the question, or the sentinel."""
    body = (
        "Read the conversations below and extract ALL information that could help answer the question: "
        "direct quotes with the speaker, surrounding context, preferences, and facts that changed over "
        "time (keep the order). Over-include rather than miss something. Do not answer the question.\n"
        f'If nothing is relevant, reply exactly: "{NO_INFO_SENTINEL}"\n\n'
        f"=== CONVERSATIONS ===\n{transcript}\n=== END ===\n\nQuestion: {question}\nExtracted information:"
    )
    return [{"role": "system", "content": EXTRACT_SYSTEM}, {"role": "user", "content": body}]


# --- judges (ConvoMem's per-category criteria, §3.6) ---------------------------------------------------

JUDGE_SYSTEM = "You are a strict grader. Reply with exactly one word: RIGHT or WRONG."

_VERDICT = "Reply with exactly one word: RIGHT or WRONG."


def judge_default(question: str, gold: str, response: str) -> str:
    return (
        "Decide whether the model's response answers the question sufficiently and completely, "
        "compared with the correct answer.\n"
        "- Every essential fact the question asks for must be present; a partial answer is WRONG.\n"
        "- Equivalent phrasing is fine; accurate extra detail is fine.\n"
        "- Focus on what the question asked.\n\n"
        f"Question: {question}\nCorrect answer: {gold}\nModel response: {response}\n\n{_VERDICT}"
    )


def judge_user_fact(question: str, gold: str, response: str, evidence: list[str]) -> str:
    if len(evidence) <= 1:
        shown = evidence[0] if evidence else "(not available)"
        rules = (
            "- RIGHT if the core answer matches the correct answer (paraphrase and accurate extra detail "
            "are fine; verbatim quoting is not required).\n"
            "- WRONG if it contradicts the correct answer, misses critical information, is confused, or "
            "does not answer.\n"
        )
        ev = f"Message available to the model: {shown}\n"
    else:
        rules = (
            "- The information came from several messages. Be somewhat lenient: RIGHT if the core answer "
            "matches and most of the evidence is reflected; minor omissions are acceptable.\n"
            "- WRONG if it contradicts the correct answer or misses critical information from several "
            "messages.\n"
        )
        ev = "Messages available to the model:\n" + "\n".join(f"- {e}" for e in evidence) + "\n"
    return (
        "Decide whether the model correctly recalled what the user said.\n"
        f"{rules}\n{ev}Question: {question}\nCorrect answer: {gold}\nModel response: {response}\n\n{_VERDICT}"
    )


def judge_abstention(question: str, response: str) -> str:
    return (
        "The conversations never contained the answer to this question, so the model is expected to "
        "abstain.\n"
        "- RIGHT if the model declines, says it does not know, says it was not mentioned, says the "
        "information is insufficient, asks for more information, or states what it knows while clearly "
        "flagging what is missing.\n"
        "- WRONG if it gives any specific answer, even a plausible one.\n\n"
        f"Question: {question}\nModel response: {response}\n\n{_VERDICT}"
    )


def judge_rubric(question: str, rubric: str, response: str) -> str:
    return (
        "Grade the model's response against the rubric. It must satisfy EVERY criterion of the rubric and "
        "show that it understood the user's context; a partial fulfilment is WRONG.\n\n"
        f"Question: {question}\nRubric: {rubric}\nModel response: {response}\n\n{_VERDICT}"
    )


def judge_temporal(question: str, gold: str, response: str) -> str:
    return (
        "Decide whether the model's response gives the correct time information.\n"
        "- Equivalent time expressions are fine (e.g. 'May 7' vs '7 May').\n"
        "- Calculations must be right; an off-by-one day count is WRONG.\n\n"
        f"Question: {question}\nCorrect answer: {gold}\nModel response: {response}\n\n{_VERDICT}"
    )
