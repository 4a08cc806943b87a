"""A generated ConvoMem-shaped corpus for the benchmark: realistic-length conversations (~1.5k tokens,
~50 messages) on everyday work and life topics, with fact and changing-fact items planted in some of them.

Generated, not hand-written: it measures prompt sizes, retrieval time and evidence recall at 300
conversations without shipping megabytes of text. Seeded, so every run sees the same corpus.
"""

from __future__ import annotations

import random

from mark_eval.convomem.loaders import ConvoMemData
from mark_eval.convomem.schema import Conversation, Item, Message, Question

PERSON = "synthetic-persona"

TOPICS = [
    ("quarterly planning", ["roadmap", "milestones", "headcount", "OKRs", "dependencies", "launch dates"]),
    ("a vendor negotiation", ["contract", "pricing tiers", "renewal", "discount", "support hours", "SLA"]),
    ("the hiring pipeline", ["candidates", "interview loop", "job description", "referrals", "offer", "onsite"]),
    ("a product launch", ["press release", "beta users", "pricing page", "onboarding", "feedback", "webinar"]),
    ("home renovation", ["kitchen cabinets", "contractor", "tiles", "budget", "permits", "paint colours"]),
    ("marathon training", ["long runs", "intervals", "shoes", "recovery", "pace", "hydration"]),
    ("learning Spanish", ["verb tenses", "flashcards", "podcasts", "tutor", "vocabulary", "pronunciation"]),
    ("a family trip", ["flights", "hotel", "itinerary", "museums", "car rental", "packing list"]),
    ("team morale", ["one-on-ones", "recognition", "burnout", "offsite", "feedback", "workload"]),
    ("personal finances", ["savings", "index funds", "emergency fund", "mortgage", "budget app", "taxes"]),
    ("a data migration", ["schemas", "downtime", "rollback plan", "backfill", "validation", "cutover"]),
    ("cooking at home", ["meal prep", "recipes", "spices", "grocery list", "slow cooker", "leftovers"]),
]
OPENERS = [
    "I want to talk through {topic} with you today.",
    "Can you help me think about {topic}?",
    "Quick one about {topic} before my next meeting.",
    "I'm stuck on {topic} and could use a second opinion.",
]
USER_LINES = [
    "The part about the {a} worries me, because the {b} is already tight and nobody owns it yet.",
    "Last week we looked at the {a} again and I still think the {b} needs a clearer plan.",
    "My worry is that the {a} slips and then the {b} gets squeezed at the very end.",
    "Do you think I should bring up the {a} first, or start with the {b} and see how it goes?",
    "Honestly the {a} feels manageable, it's the {b} that keeps me up at night sometimes.",
    "I wrote a short note about the {a} and shared it, but nobody commented on the {b} part.",
]
ASSISTANT_LINES = [
    "That makes sense. I'd start by writing down what a good outcome for the {a} looks like, then check "
    "whether the {b} supports it.",
    "One option is to timebox the {a} to a single week and review the {b} at the end of it with everyone.",
    "It helps to separate the {a} from the {b}: decide the first now, and collect data on the second.",
    "A useful question to ask is who is affected most by the {b}, and whether the {a} changes that.",
    "You could propose a small experiment on the {a} and agree up front how you will judge the {b}.",
    "If the {b} is the real constraint, put it on the agenda first and let the {a} follow from it.",
]
NAMES = [
    "Biscuit",
    "Juniper",
    "Marlow",
    "Pepper",
    "Rosalind",
    "Tobias",
    "Wren",
    "Fennel",
    "Odessa",
    "Quill",
    "Saffron",
    "Thistle",
    "Yarrow",
    "Indigo",
    "Caspian",
    "Lumen",
    "Sorrel",
    "Bramble",
    "Calloway",
    "Delphine",
]
THINGS = [
    ("dog", "is called"),
    ("cat", "is called"),
    ("boat", "is named"),
    ("bike", "is nicknamed"),
    ("plant", "is called"),
    ("car", "is nicknamed"),
]
RELATIONS = ["sister", "brother", "neighbour", "manager", "cousin", "best friend", "aunt", "mentor"]
DAYS = ["March 3", "April 14", "May 22", "June 9", "July 1", "August 18", "September 30", "October 12"]
PROJECTS = [
    "billing revamp",
    "warehouse app",
    "mobile checkout",
    "partner portal",
    "routing engine",
    "analytics dashboard",
    "loyalty program",
    "search upgrade",
]


DISTRACTORS = [
    "My {relation} keeps asking whether we should get a {thing} as well, but I'm not sure yet.",
    "I told my {relation} about the {thing} and we laughed about it for ages.",
    "The {project} phase {n} review went fine, the date for it is still {day} as far as I know.",
    "Someone asked about the {project} phase {n} timeline; I said {day} is only a rough guess.",
]


def _distractor(rng: random.Random) -> str:
    """Near-miss lines (same people, pets, projects and dates as the questions, never the answer)."""
    thing, _ = rng.choice(THINGS)
    return rng.choice(DISTRACTORS).format(
        relation=rng.choice(RELATIONS),
        thing=thing,
        project=rng.choice(PROJECTS),
        n=rng.randrange(100, 999),
        day=rng.choice(DAYS),
    )


def _conversation(rng: random.Random, cid: str, n_messages: int, planted: list[tuple[int, str]]) -> Conversation:
    topic, words = rng.choice(TOPICS)
    messages: list[Message] = []
    for i in range(n_messages):
        a, b = rng.sample(words, 2)
        if i == 0:
            text = rng.choice(OPENERS).format(topic=topic) + " " + rng.choice(USER_LINES).format(a=a, b=b)
        elif i % 2 == 0:
            text = rng.choice(USER_LINES).format(a=a, b=b)
        else:
            text = rng.choice(ASSISTANT_LINES).format(a=a, b=b)
        messages.append(Message(speaker="user" if i % 2 == 0 else "assistant", text=text))
    for _ in range(2):
        if rng.random() < 0.5:
            messages[2 * rng.randrange(1, n_messages // 2)] = Message(speaker="user", text=_distractor(rng))
    for pos, text in planted:
        messages[pos] = Message(speaker="user", text=text)
    return Conversation(id=cid, messages=messages, containsEvidence=bool(planted))


def synthetic_data(n_filler: int, n_items: int, seed: int = 0, n_messages: int = 52) -> ConvoMemData:
    """``n_items`` questions (two thirds single-fact, one third changing facts with two evidence messages)
    and ``n_filler`` filler conversations, all of the same persona."""
    rng = random.Random(f"convomem-synthetic|{seed}")
    items: list[Item] = []
    for i in range(n_items):
        if i % 3 == 2:
            project = PROJECTS[i % len(PROJECTS)] + f" phase {i}"
            first, second = rng.sample(DAYS, 2)
            texts = [
                f"The deadline for the {project} is {first}, so plan around that.",
                f"Update: the {project} deadline moved to {second}, the old date is off.",
            ]
            question, answer, category = f"When is the {project} deadline now?", second, "changing"
        else:
            thing, verb = THINGS[i % len(THINGS)]
            relation = RELATIONS[i % len(RELATIONS)]
            name = NAMES[i % len(NAMES)] + ("" if i < len(NAMES) else f" {i}")
            texts = [f"By the way, my {relation}'s {thing} {verb} {name}, it's a funny story."]
            question, answer, category = f"What is my {relation}'s {thing} called?", name, "user_facts"
        convs = [
            _conversation(rng, f"syn-ev-{i}-{k}", n_messages, [(2 * rng.randrange(1, n_messages // 2), t)])
            for k, t in enumerate(texts)
        ]
        conv_ids = [c.cid for c in convs]
        q = Question(
            qid=Question.make_id(category, question, answer, texts, conv_ids),
            category=category,
            evidence_count=len(texts),
            question=question,
            answer=answer,
            evidence_texts=tuple(texts),
            evidence_conversation_ids=tuple(conv_ids),
            person_id=PERSON,
            source="synthetic",
        )
        items.append(Item(question=q, conversations=convs))
    filler = [_conversation(rng, f"syn-fill-{j}", n_messages, []) for j in range(n_filler)]
    return ConvoMemData(items=items, filler={PERSON: filler}, sources=["synthetic"])
