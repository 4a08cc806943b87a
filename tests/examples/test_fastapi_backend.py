"""The example FastAPI backend: every endpoint, and users kept apart, through HTTP.

One MemoryAgent on a scripted fake LLM (passed in as `llm=`) over the real store: SQLite, chroma and the
embedding model.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
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
    agent = MemoryAgent(settings, llm=Brain().client(), store=MemoryStore(settings, embedder=embedder), owns_store=True)
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


@pytest.fixture
def brain() -> Brain:
    return Brain()


@pytest.fixture
def faulty(settings, embedder, brain):
    """The app on a Brain whose replies the tests break in the ways issue 8 found."""
    agent = MemoryAgent(settings, llm=brain.client(), store=MemoryStore(settings, embedder=embedder), owns_store=True)
    with TestClient(create_app(agent)) as client:
        client.agent = agent
        yield client


def test_an_oversized_message_gets_413_and_later_facts_are_remembered_with_scripted_llm(faulty, brain):
    too_long = {"message": "This model's maximum context length is 8192 tokens.", "code": "context_length_exceeded"}
    answer = brain.reply
    brain.reply = lambda body: (
        httpx.Response(400, json={"error": too_long}) if len(body["messages"][-1]["content"]) > 16_000 else answer(body)
    )
    r = faulty.post("/chat", json={"user_id": "gina", "message": "x " * 100_000})
    assert r.status_code == 413 and "too long for the model" in r.json()["detail"]
    assert "\n" not in r.json()["detail"]
    assert faulty.post("/chat", json={"user_id": "gina", "message": "My tea is called Lapsang."}).status_code == 200
    flush(faulty)
    memories = faulty.get("/recall", params={"user_id": "gina", "q": "tea"}).json()["memories"]
    assert [m["text"] for m in memories] == ["The user's tea is called Lapsang."]


def test_an_endpoint_answering_html_gets_503_or_502_not_500_and_the_turn_is_kept_with_scripted_llm(faulty, brain):
    page = httpx.Response(200, text="<html>Bad gateway</html>", headers={"content-type": "text/html"})
    brain.reply = lambda body: page
    r = faulty.post("/chat", json={"user_id": "hal", "message": "My cat is called Tom."})
    assert r.status_code == 503 and "not JSON" in r.json()["detail"] and "your message was saved" in r.json()["detail"]
    assert [t.content for t in faulty.agent.store.turns("hal")] == ["My cat is called Tom."]
    brain.reply = lambda body: httpx.Response(400, json={"error": {"message": "unknown parameter", "type": "x"}})
    r = faulty.post("/chat", json={"user_id": "hal", "message": "Hello?"})
    assert r.status_code == 502 and "rejected the request" in r.json()["detail"]


@pytest.mark.parametrize("user_id", ["a/b", "..", ".", "50% off", "ünï cödé"])
def test_one_id_rule_on_every_route_and_purge_removes_what_chat_accepted_with_scripted_llm(client, user_id):
    path = "/users/" + quote(user_id, safe="").replace(".", "%2E")
    assert client.post("/chat", json={"user_id": user_id, "message": "My dog is called Rex."}).status_code == 200
    flush(client)
    assert client.get("/recall", params={"user_id": user_id, "q": "dog"}).json()["memories"] != []
    r = client.delete(path)
    assert r.status_code == 200, r.text
    assert r.json()["turns"] == 2 and r.json()["memories"] == 1
    assert client.agent.store.turns(user_id) == [] and client.agent.store.list(user_id).total == 0


def test_a_raw_dot_dot_path_reaches_the_purge_route_with_scripted_llm(client):
    """curl --path-as-is sends /users/.. as is (most clients resolve it to /, so the app says to encode dots)."""
    client.post("/chat", json={"user_id": "..", "message": "My dog is called Rex."})
    flush(client)
    status, body = client.portal.call(raw_request, client.app, "DELETE", "/users/..")
    assert status == 200 and json.loads(body)["turns"] == 2
    assert client.agent.store.turns("..") == []


@pytest.mark.parametrize("bad", ["", "   ", "tab\there", "x" * 257])
def test_bad_ids_get_the_same_one_line_422_on_every_route_with_scripted_llm(client, bad):
    answers = [
        client.post("/chat", json={"user_id": bad, "message": "hi"}),
        client.post("/remember", json={"user_id": bad, "messages": [{"content": "hi"}]}),
        client.get("/recall", params={"user_id": bad, "q": "hi"}),
        client.post("/feedback", json={"user_id": bad, "response_id": "r", "good": True}),
        client.delete("/users/" + quote(bad, safe="")),
    ]
    ((status, detail),) = {(r.status_code, r.json()["detail"]) for r in answers}
    assert status == 422 and detail.startswith("user id ")


async def raw_request(app, method: str, path: str) -> tuple[int, bytes]:
    """Call the ASGI app with a path exactly as given (no client-side URL normalisation)."""
    sent: list[dict] = []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "server": ("testserver", 80),
        "client": ("testclient", 50000),
    }

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
