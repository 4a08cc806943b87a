"""The one list of words too common to tell texts apart, for every part that matches words.

Ranking (keyword search in :mod:`memory_store.keywords`, the evaluator's BM25 in ``mark_eval.convomem.bm25``)
leaves out :data:`SEARCH_STOPWORDS`; matching facts (the forgetting guard in :mod:`memory_store.forgetting`, the
extraction's checks in ``mark_agents.builder``) leaves out the longer :data:`STOPWORDS`; each may add words of its
own domain on top (:data:`NOTE_WORDS`, ``forgetting.GENERIC``).
"""

from __future__ import annotations

#: Words too common to rank by, for keyword search and the evaluator's BM25: they match most rows and cost time
#: without telling texts apart ("user": the MARK agents write every note as "The user ..."). Kept short on purpose:
#: with the longer list below ("after", "before", "all", "like" ...) keyword search on the development dialogue put
#: 5 points less of the basic-facts evidence into the prompt.
SEARCH_STOPWORDS = frozenset(
    "a an and are as at be but by did do does for from had has have he her his how i if in is it its me my "
    "of on or our she so that the their them they this to was we were what when where which who why will "
    "with you your user users".split()
)

#: English function words for matching facts (the forgetting guard, the extraction's checks): the search list and
#: more, with the pieces a tokenizer leaves of contractions (``s``, ``t``, ``don``, ``i'm``).
STOPWORDS = (SEARCH_STOPWORDS - {"user", "users"}) | frozenset(
    "been being can could hers him into just mine no not ours than theirs then there these those too up us whom "
    "whose would yours about after again all also am any because before both each few more most much only "
    "other over own same should some such through under until very s t don isn wasn aren "
    "i'd i'll i'm i've it's ok okay yes".split()
)

#: Words every MARK note is framed with ("The user likes ...", "The user wants ..."): they match most notes and
#: never tell two of them apart.
NOTE_WORDS = frozenset("user users user's like likes want wants".split())
