"""ConvoMem benchmark: full context vs RAG vs MARK memory vs hybrid, across conversation counts."""
