"""The example FastAPI backend: every endpoint, and users kept apart, through HTTP.

One MemoryAgent on a scripted fake LLM (passed in as `llm=`) over the real store: SQLite, chroma and the
embedding model.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from examples.fastapi_backend.app import create_app
from mark_agents.agent import MemoryAgent
from mark_agents.config import Settings
from memory_store import MemoryStore
from tests.mark_agents.fake_llm import Brain


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home")


@pytest.fixture
def client(settings, embedder):
    agent = MemoryAgent(settings, llm=Brain().client(), store=MemoryStore(settings, embedder=embedder))
    with TestClient(create_app(agent)) as client:  # the context runs the lifespan: one event loop for the agent
        client.agent = agent
        yield client


def flush(client: TestClient) -> None:
    """Wait for the background extraction a /chat scheduled (on the app's own loop)."""
    client.portal.call(client.agent.aflush)


def test_chat_recall_feedback_purge_with_scripted_fake_llm(client, settings, embedder):
    r = client.post("/chat", json={"user_id": "alice", "message": "My dog is called Biscuit."})
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["reply"] == "Noted." and first["memories"] == [] and first["session_id"] == "default"
    assert first["usage"]["prompt_tokens"] == 20 and first["usage"]["calls"] == 1
    flush(client)

    r = client.post("/chat", json={"user_id": "alice", "message": "What is my dog's name?", "session_id": "s2"})
    second = r.json()
    assert second["reply"] == "You told me: The user's dog is called Biscuit."
    (used,) = second["memories"]
    assert used["text"] == "The user's dog is called Biscuit." and used["kind"] == "user_question"
    assert 0 < used["score"] <= 1 and second["memory_ms"] > 0

    r = client.get("/recall", params={"user_id": "alice", "q": "dog", "budget_tokens": 200})
    recalled = r.json()
    assert [m["id"] for m in recalled["memories"]] == [used["id"]]
    assert "<memories>" in recalled["text"] and "Biscuit" in recalled["text"] and 0 < recalled["tokens"] <= 200

    r = client.post("/feedback", json={"user_id": "alice", "response_id": second["response_id"], "good": True})
    assert r.json() == {"memory_ids": [used["id"]]}
    with MemoryStore(settings, embedder=embedder) as store:
        assert store.get(used["id"], "alice").trust == pytest.approx(0.8)

    r = client.delete("/users/alice")
    assert r.status_code == 200
    report = r.json()
    assert report["memories"] == 1 and report["turns"] == 4
    assert client.get("/recall", params={"user_id": "alice", "q": "dog"}).json()["memories"] == []


def test_users_are_isolated_through_the_api_with_scripted_fake_llm(client):
    client.post("/chat", json={"user_id": "alice", "message": "My dog is called Biscuit."})
    r = client.post(
        "/remember",
        json={
            "user_id": "bob",
            "messages": [
                {"role": "user", "content": "My cat is called Miso."},
                {"role": "assistant", "content": "Nice."},
            ],
            "wait": True,
        },
    )
    assert r.status_code == 200 and r.json()["status"] == "done" and len(r.json()["turn_ids"]) == 2
    flush(client)

    bob = client.post("/chat", json={"user_id": "bob", "message": "What is my dog's name?"}).json()
    assert "Biscuit" not in json.dumps(bob)
    assert [m["text"] for m in bob["memories"]] == ["The user's cat is called Miso."]
    alice = client.get("/recall", params={"user_id": "alice", "q": "cat"}).json()
    assert [m["text"] for m in alice["memories"]] == ["The user's dog is called Biscuit."]

    # Bob cannot rate Alice's replies, and purging Bob leaves Alice alone.
    alice_reply = client.post("/chat", json={"user_id": "alice", "message": "What is my dog's name?"}).json()
    r = client.post("/feedback", json={"user_id": "bob", "response_id": alice_reply["response_id"], "good": False})
    assert r.status_code == 422 and "no reply" in r.json()["detail"]
    assert client.delete("/users/bob").json()["memories"] == 1
    assert [m["text"] for m in alice_reply["memories"]] == ["The user's dog is called Biscuit."]
    assert client.get("/recall", params={"user_id": "alice", "q": "dog"}).json()["memories"] != []


def test_remember_in_background_and_bad_input_with_scripted_fake_llm(client):
    r = client.post(
        "/remember", json={"user_id": "carol", "messages": [{"role": "user", "content": "My fish is called Bubbles."}]}
    )
    assert r.json()["status"] == "scheduled"
    flush(client)
    assert client.get("/recall", params={"user_id": "carol", "q": "fish"}).json()["memories"][0]["text"] == (
        "The user's fish is called Bubbles."
    )
    assert client.post("/chat", json={"user_id": "", "message": "hi"}).status_code == 422
    assert client.post("/chat", json={"user_id": "   ", "message": "hi"}).json() == {"detail": "user id is empty"}
    r = client.post("/remember", json={"user_id": "carol", "messages": [{"role": "robot", "content": "beep"}]})
    assert r.status_code == 422 and "role must be" in r.json()["detail"]
    assert client.get("/recall", params={"user_id": "carol"}).status_code == 422
    assert client.get("/health").json() == {"status": "ok"}
