"""Answering methods as plug-ins behind one interface (see ``base.Answerer``)."""

from __future__ import annotations

from mark_eval.convomem.answerers.base import Answer, Answerer, AnswererContext, Selection
from mark_eval.convomem.answerers.extracted import BlockBased, ExtractedContext
from mark_eval.convomem.answerers.full_context import FullContext
from mark_eval.convomem.answerers.hybrid import Hybrid
from mark_eval.convomem.answerers.mark import MarkMemory
from mark_eval.convomem.answerers.mem0_memory import Mem0Memory
from mark_eval.convomem.answerers.rag import Rag
from mark_eval.convomem.answerers.registry import (
    create,
    method_names,
    needs_llm_to_select,
    register,
    resolve_methods,
)

register("full_context", FullContext)
register("rag", Rag)
register("rag_dense", lambda ctx: Rag(ctx, mode="dense"))
register("rag_keyword", lambda ctx: Rag(ctx, mode="keyword"))
register("hybrid", Hybrid)
register("mark", MarkMemory, needs_llm_to_select=lambda ctx: ctx.mark_extraction == "llm")
register("extracted_context", ExtractedContext, needs_llm_to_select=True)
register("block_based", BlockBased, needs_llm_to_select=True)
register("mem0", Mem0Memory, needs_llm_to_select=True)

__all__ = [
    "Answer",
    "Answerer",
    "AnswererContext",
    "BlockBased",
    "ExtractedContext",
    "FullContext",
    "Hybrid",
    "MarkMemory",
    "Mem0Memory",
    "Rag",
    "Selection",
    "create",
    "method_names",
    "needs_llm_to_select",
    "register",
    "resolve_methods",
]
