"""The agents against the real local model over HTTP (marked llm; runs in CI)."""

from __future__ import annotations

import pytest

from mark_agents import MemoryAgent
from memory_store import MemoryStatus


@pytest.mark.llm
async def test_changed_fact_supersedes_the_old_one_with_the_local_model(llm_settings):
    agent = MemoryAgent(llm_settings)
    try:
        first = await agent.aremember(
            [{"role": "user", "content": "I live in Denver."}, {"role": "assistant", "content": "Denver is lovely."}],
            "alice",
        )
        assert first.status == "done", first.error
        assert any("Denver" in m.text for m in agent.store.list("alice").items)
        second = await agent.aremember(
            [
                {"role": "user", "content": "I moved from Denver to Lisbon last month."},
                {"role": "assistant", "content": "Congratulations on the move!"},
            ],
            "alice",
        )
        assert second.status == "done", second.error
        everything = agent.store.list("alice", include_history=True).items
        old = [m for m in everything if m.status == MemoryStatus.superseded]
        assert old and all("Denver" in m.text and "Lisbon" not in m.text for m in old), everything
        active = [m.text for m in agent.store.list("alice").items]
        assert any("Lisbon" in t for t in active), active
        event = next(e for e in agent.store.history("alice", old[0].id) if e.event == "supersede")
        assert "Lisbon" in event.new_text and event.reason
        hits = await agent.arecall("Where do I live?", "alice")
        assert "Lisbon" in hits.text
    finally:
        await agent.aclose()
