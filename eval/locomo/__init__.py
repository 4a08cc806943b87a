"""LoCoMo benchmark (Maharana et al., 2024), read natively: ``mark eval locomo``.

Pipeline: ``loader.load_locomo`` (locomo10.json or one-dialogue files; a dialogue = one haystack, a session =
one dated conversation, speakers by name) -> the ConvoMem evaluator's answerers with LoCoMo's prompt profile
(``prompts.LOCOMO_PROMPTS``) -> the J judge (``judge.JJudge``), token F1 and BLEU-1 (``metrics``), evidence
recall -> ``results.jsonl``, ``summary.csv`` (categories 1-4 headline, adversarial apart), ``locomo.png``,
with the published figures (``anchors``) beside ours.
"""
