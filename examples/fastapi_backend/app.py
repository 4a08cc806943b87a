"""A chatbot backend with long-term memory: one MemoryAgent (its async API) serving many users.

    pip install -e '.[dev,local]'          # fastapi; the embedded model (or set MARK_LLM_BASE_URL)
    MARK_HOME=./data uvicorn examples.fastapi_backend.app:app --port 8000

    curl -s localhost:8000/chat -H 'content-type: application/json' \\
         -d '{"user_id": "alice", "message": "My dog is called Biscuit."}'

Settings come from the environment (``MARK_HOME``, ``MARK_LLM_BASE_URL``, ``MARK_LLM_MODEL``, ``MARK_LLM_API_KEY``
...); with no endpoint configured the embedded local model is started on first use. Every user's memories are
scoped by ``user_id``: authenticate users in front of this app and never take the id from an untrusted client.
One agent is bound to the server's event loop, so run one worker per process (scale out with processes).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mark_agents.agent import MemoryAgent
from mark_agents.config import Settings
from mark_agents.llm import LLMUnavailable, Usage
from memory_store import InvalidInput, MarkError, NotFound

# -- request and response bodies ----------------------------------------------------------------------------


class ChatRequest(BaseModel):
    user_id: str = Field(min_length=1)
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
    user_id: str = Field(min_length=1)
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
    user_id: str = Field(min_length=1)
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
        await asyncio.to_thread(app.state.agent.store.embed, ["warm up"])
        try:
            yield
        finally:
            await app.state.agent.aclose()  # waits for background extraction first
            await asyncio.to_thread(app.state.agent.store.close)

    app = FastAPI(title="mark chatbot backend", lifespan=lifespan)

    def the_agent(request: Request) -> MemoryAgent:
        return request.app.state.agent

    @app.exception_handler(MarkError)
    async def mark_error(request: Request, exc: MarkError) -> JSONResponse:
        status = 500
        if isinstance(exc, InvalidInput):
            status = 422
        elif isinstance(exc, NotFound):
            status = 404
        elif isinstance(exc, LLMUnavailable):
            status = 503
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.post("/chat")
    async def chat(body: ChatRequest, request: Request) -> ChatResponse:
        """Reply with the user's memories; new memories are extracted after the reply, in the background."""
        reply = await the_agent(request).achat(body.user_id, body.message, body.session_id)
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
            [m.model_dump() for m in body.messages], body.user_id, body.session_id, wait=body.wait
        )
        return RememberResponse(turn_ids=result.turn_ids, status=result.status, error=result.error, usage=result.usage)

    @app.get("/recall")
    async def recall(
        request: Request,
        user_id: str = Query(min_length=1),
        q: str = Query(min_length=1),
        budget_tokens: int = Query(600, ge=1, le=8000),
    ) -> RecallResponse:
        """A ready context block of the user's memories for a query, to put into your own prompt."""
        found = await the_agent(request).arecall(q, user_id, budget_tokens)
        return RecallResponse(
            text=found.text,
            tokens=found.tokens,
            memories=[MemoryUsed(id=m.id, text=m.text, kind=m.kind, score=m.score) for m in found.memories],
        )

    @app.post("/feedback")
    async def feedback(body: FeedbackRequest, request: Request) -> dict[str, list[str]]:
        """Good or bad on a reply: the trust of the memories it used goes up or down."""
        ids = await the_agent(request).afeedback(body.user_id, body.response_id, body.good, comment=body.comment)
        return {"memory_ids": ids}

    @app.delete("/users/{user_id}")
    async def purge(user_id: str, request: Request) -> dict[str, object]:
        """Remove every trace of a user: memories, raw turns, history, feedback, vectors and chat state."""
        report = await the_agent(request).apurge_user(user_id)
        return report.model_dump()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


app = create_app()
