"""LoCoMo's prompts: the answer prompt's wording (dated two-person dialogues) and the J judge.

The judge follows the criteria of mem0's LoCoMo judge (arXiv 2504.19413, "J"): a binary CORRECT/WRONG,
generous with paraphrase and extra detail as long as the answer is about the same thing as the gold answer,
and with dates written another way or relative to the session as long as they name the same time; a short
reason first, then the label. The wording is ours. Adversarial questions (category 5) ask about something the
dialogue never says of that person: the right answer says it was not mentioned. Bump :data:`LOCOMO_PROMPT_VERSION`
when any text here changes: it is recorded with every result row.
"""

from __future__ import annotations

from mark_eval.convomem.prompts import ContextKind, PromptProfile

LOCOMO_PROMPT_VERSION = "locomo-py-1"

_INTRO: dict[ContextKind, tuple[str, str]] = {
    ContextKind.HISTORY: (
        "Below is the complete record of the conversations between two people, session by session, oldest "
        "first; each session is headed by the date and time it took place. Use all relevant information in it.",
        "CONVERSATIONS",
    ),
    ContextKind.EXCERPTS: (
        "Below are the excerpts of the conversations between two people that matter most for this question, "
        "oldest first; each is headed by the date and time of its session. Use all relevant information in them.",
        "CONVERSATION EXCERPTS",
    ),
    ContextKind.MEMORIES: (
        "Below are the memories kept from the conversations between two people. Use all of them that are relevant.",
        "MEMORIES",
    ),
    ContextKind.EXTRACTED: (
        "Below is the information extracted from the conversations between two people for this question.",
        "EXTRACTED INFORMATION",
    ),
}

LOCOMO_PROMPTS = PromptProfile(
    name="locomo",
    version=LOCOMO_PROMPT_VERSION,
    system="You answer questions about two people from the record of their conversations with each other.",
    note=(
        "Each line starts with the name of the person speaking. A session's date tells when its lines were "
        'said: turn relative times into dates from it (said on 4 May 2022, "last year" means 2022 and '
        '"yesterday" 3 May 2022).'
    ),
    grading=(
        "How to answer:\n"
        "1. Answer briefly: a short phrase with the essential facts (who, what, when, where), not a paragraph.\n"
        "2. For a question about time, give the date, month or year itself, not a relative expression.\n"
        "3. When several pieces of information matter, combine them.\n"
        "4. Use only what the conversations say and never guess: if they do not say it (of that person), "
        'answer "Not mentioned in the conversations."'
    ),
    intro=_INTRO,
    ask="Based on the information above, answer the question briefly.",
)

JUDGE_SYSTEM = "You grade answers to questions about a conversation. You end your reply with CORRECT or WRONG."

_LABEL = (
    "First write one short sentence explaining your decision, then on the last line write the label: "
    'CORRECT or WRONG (only one of the two words), as JSON: {"label": "CORRECT"} or {"label": "WRONG"}.'
)


def judge_j(question: str, gold: str, response: str) -> str:
    """mem0's J criteria: same topic and same facts as the gold answer, generous with form and length."""
    return (
        "Label a generated answer to a question as CORRECT or WRONG against the gold answer.\n"
        "The question asks about something one person should know about another from their earlier "
        "conversations. The gold answer is usually short; the generated answer may be much longer.\n"
        "- Be generous: if the generated answer refers to the same thing as the gold answer (paraphrase, "
        "more detail, another wording), it is CORRECT.\n"
        '- For questions about time, the generated answer may write the date differently ("May 7th" or '
        '"7 May") or relative to when it was said ("the week before 9 June 2023"): it is CORRECT if it '
        "refers to the same date or period as the gold answer.\n"
        "- It is WRONG if it names a different thing, person, place or time, says it does not know, or "
        "misses what the gold answer gives.\n\n"
        f"Question: {question}\nGold answer: {gold}\nGenerated answer: {response}\n\n{_LABEL}"
    )


def judge_adversarial(question: str, response: str) -> str:
    """LoCoMo category 5: the dialogue never says this of the person asked about."""
    return (
        "The question below cannot be answered from the conversations: they never say this about the "
        "person it asks about (it may be true of someone else, or not mentioned at all). Label the "
        "generated answer.\n"
        "- CORRECT if it says the conversations do not mention it, that it does not know, or that the "
        "premise is wrong (for example that it was the other person), even if it adds what is known.\n"
        "- WRONG if it answers the question as asked with a specific answer about that person.\n\n"
        f"Question: {question}\nGenerated answer: {response}\n\n{_LABEL}"
    )
