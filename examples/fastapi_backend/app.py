"""A chatbot backend with long-term memory: one MemoryAgent (its async API) serving many users.

    pip install -e '.[dev,local]'          # fastapi; the embedded model (or set MARK_LLM_BASE_URL)
    MARK_HOME=./data uvicorn examples.fastapi_backend.app:app --port 8000

    curl -s localhost:8000/chat -H 'content-type: application/json' \\
         -d '{"user_id": "alice", "message": "My dog is called Biscuit."}'

Settings come from the environment (``MARK_HOME``, ``MARK_LLM_BASE_URL``, ``MARK_LLM_MODEL``, ``MARK_LLM_API_KEY``
...); with no endpoint configured the embedded local model is started on first use. Every user's memories are
scoped by ``user_id``: authenticate users in front of this app and never take the id from an untrusted client.
One agent is bound to the server's event loop, so run one worker per process (scale out with processes).

User ids follow one rule on every route, the store's (``check_scope_id``): any printable text up to 256
characters. In the path of ``DELETE /users/{user_id}`` percent-encode the id whole
(``urllib.parse.quote(user_id, safe="")``), dots included (``%2E``), since HTTP clients resolve ``.`` and ``..``.

Errors are one line in ``{"detail": ...}``: 422 bad input, 404 not found, 413 a message too long for the
model's context window, 502 the model endpoint refused or answered nonsense, 503 it is down.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mark_agents.agent import MemoryAgent
from mark_agents.config import Settings
from mark_agents.llm import LLMContextExceeded, LLMError, LLMUnavailable, LocalModelMissing, Usage
from memory_store import InvalidInput, MarkError, NotFound
from memory_store.validation import check_scope_id

# -- request and response bodies ----------------------------------------------------------------------------


class ChatRequest(BaseModel):
    user_id: str
    message: str = Field(min_length=1)
    session_id: str | None = None


class MemoryUsed(BaseModel):
    id: str
    text: str
    kind: str
    score: float


class ChatResponse(BaseModel):
    reply: str
    response_id: str
    session_id: str
    memories: list[MemoryUsed]
    usage: Usage
    memory_ms: float


class Message(BaseModel):
    role: str = "user"
    content: str


class RememberRequest(BaseModel):
    user_id: str
    messages: list[Message] = Field(min_length=1)
    session_id: str | None = None
    #: False (the default): return at once and extract in the background; True: wait for the new memories.
    wait: bool = False


class RememberResponse(BaseModel):
    turn_ids: list[str]
    status: str
    error: str | None = None
    usage: Usage


class RecallResponse(BaseModel):
    text: str
    tokens: int
    memories: list[MemoryUsed]


class FeedbackRequest(BaseModel):
    user_id: str
    response_id: str = Field(min_length=1)
    good: bool
    comment: str = ""


# -- the app ------------------------------------------------------------------------------------------------


def create_app(agent: MemoryAgent | None = None) -> FastAPI:
    """The app; `agent` lets tests (or a bigger app) supply one, else it is built from the environment.

    The app owns the agent either way: shutdown waits for background extraction and closes it.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.agent = agent or MemoryAgent(Settings())
        # Load the embedding model now rather than in the first user's request (it takes seconds).
        await app.state.agent.astore.embed(["warm up"])
        try:
            yield
        finally:
            await app.state.agent.aclose()  # waits for background extraction, closes what the agent opened

    app = FastAPI(title="mark chatbot backend", lifespan=lifespan)

    def the_agent(request: Request) -> MemoryAgent:
        return request.app.state.agent

    @app.exception_handler(MarkError)
    async def mark_error(request: Request, exc: MarkError) -> JSONResponse:
        return JSONResponse({"detail": " ".join(str(exc).split())}, status_code=_status_of(exc))

    @app.post("/chat")
    async def chat(body: ChatRequest, request: Request) -> ChatResponse:
        """Reply with the user's memories; new memories are extracted after the reply, in the background."""
        reply = await the_agent(request).achat(check_scope_id(body.user_id), body.message, body.session_id)
        return ChatResponse(
            reply=reply.reply,
            response_id=reply.response_id,
            session_id=reply.session_id,
            memories=[MemoryUsed(id=m.id, text=m.text, kind=m.kind, score=m.score) for m in reply.memories],
            usage=reply.usage,
            memory_ms=reply.memory_ms,
        )

    @app.post("/remember")
    async def remember(body: RememberRequest, request: Request) -> RememberResponse:
        """For backends with their own LLM loop: store the messages and build memories from them."""
        result = await the_agent(request).aremember(
            [m.model_dump() for m in body.messages], check_scope_id(body.user_id), body.session_id, wait=body.wait
        )
        return RememberResponse(turn_ids=result.turn_ids, status=result.status, error=result.error, usage=result.usage)

    @app.get("/recall")
    async def recall(
        request: Request,
        user_id: str = Query(),
        q: str = Query(min_length=1),
        budget_tokens: int = Query(600, ge=1, le=8000),
    ) -> RecallResponse:
        """A ready context block of the user's memories for a query, to put into your own prompt."""
        found = await the_agent(request).arecall(q, check_scope_id(user_id), budget_tokens)
        return RecallResponse(
            text=found.text,
            tokens=found.tokens,
            memories=[MemoryUsed(id=m.id, text=m.text, kind=m.kind, score=m.score) for m in found.memories],
        )

    @app.post("/feedback")
    async def feedback(body: FeedbackRequest, request: Request) -> dict[str, list[str]]:
        """Good or bad on a reply: the trust of the memories it used goes up or down."""
        ids = await the_agent(request).afeedback(
            check_scope_id(body.user_id), body.response_id, body.good, comment=body.comment
        )
        return {"memory_ids": ids}

    @app.delete("/users/{user_id:path}")  # ":path": an id holding "/" (sent as %2F) is still one id
    async def purge(user_id: str, request: Request) -> dict[str, object]:
        """Remove every trace of a user: memories, raw turns, history, feedback, vectors and chat state."""
        report = await the_agent(request).apurge_user(check_scope_id(user_id))
        return report.model_dump()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _status_of(exc: MarkError) -> int:
    """The HTTP status of an error: the caller's fault (4xx), the model endpoint's (502/503), or ours (500)."""
    if isinstance(exc, InvalidInput):
        return 422
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, LLMContextExceeded):
        return 413
    if isinstance(exc, LLMUnavailable | LocalModelMissing):  # down, or not installed on this server
        return 503
    if isinstance(exc, LLMError):
        return 502
    return 500


app = create_app()
