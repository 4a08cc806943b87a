"""The one list of words too common to tell texts apart, for every part that matches words.

Keyword search (:mod:`memory_store.keywords`), the forgetting guard (:mod:`memory_store.forgetting`), the
extraction's checks (``mark_agents.builder``) and the evaluator's BM25 (``mark_eval.convomem.bm25``) all leave
these words out; each may add words of its own domain on top (:data:`NOTE_WORDS`, ``forgetting.GENERIC``).
"""

from __future__ import annotations

#: English function words (with the pieces a tokenizer leaves of contractions: ``s``, ``t``, ``don``, ``i'm``).
STOPWORDS = frozenset(
    "a an and are as at be been being but by can could did do does for from had has have he her hers him his how "
    "i if in into is it its just me mine my no not of on or our ours she so than that the their theirs them then "
    "there these they this those to too up us was we were what when where which who whom whose why will with "
    "would you your yours about after again all also am any because before both each few more most much only "
    "other over own same should some such through under until very s t don isn wasn aren "
    "i'd i'll i'm i've it's ok okay yes".split()
)

#: Words every MARK note is framed with ("The user likes ...", "The user wants ..."): they match most notes and
#: never tell two of them apart.
NOTE_WORDS = frozenset("user users user's like likes want wants".split())
