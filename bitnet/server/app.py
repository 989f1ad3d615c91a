"""The OpenAI-compatible HTTP API over one model (FastAPI + the continuous-batching scheduler).

Endpoints: POST /v1/completions, POST /v1/chat/completions (both with SSE streaming),
GET /v1/models, GET /health (503 until the model is loaded and its backend validated),
GET /metrics (Prometheus), and a chat page for browsers at GET / (bitnet/server/chat_page.py). Errors use OpenAI's body: {"error": {"message", "type", "param",
"code"}}; a bad request never disturbs the others.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from fastapi import Depends, FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException

from bitnet.core.sampling import SamplingParams
from bitnet.hal import KV_BLOCK
from bitnet.server.chat_page import add_chat_page
from bitnet.server.limits import BodySizeLimit, RateLimiter
from bitnet.server.metrics import Metrics
from bitnet.server.defaults import DEFAULT_MAX_BATCH, DEFAULT_PREFILL_CHUNK
from bitnet.server.kv_memory import parse_kv_memory
from bitnet.server.scheduler import Event, QueueFullError, Request, Scheduler
from bitnet.server.schemas import ChatRequest, CompletionRequest

log = logging.getLogger("bitnet.server")


@dataclass
class ServerSettings:
    model_name: str = "bitnet"
    api_keys: list[str] = field(default_factory=list)  # empty: no authentication
    rate_limit: int | None = None  # requests per minute per key (or per client address)
    max_request_bytes: int = 1 << 20
    max_tokens_limit: int = 4096
    cors_origins: list[str] = field(default_factory=list)  # empty: CORS off
    max_batch: int = DEFAULT_MAX_BATCH
    max_waiting: int = 256
    kv_memory: str | None = None  # --kv-memory: "4GB" or "0.5"; None: see kv_memory.kv_budget
    prefill_chunk: int = DEFAULT_PREFILL_CHUNK


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, \
            param, code


def error_body(message: str, type_: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class _State:
    """What the app holds: the model (once loaded), its scheduler, the load error if any."""

    def __init__(self) -> None:
        self.model: Any = None
        self.scheduler: Scheduler | None = None
        self.error: str | None = None
        self.ready = threading.Event()


def create_app(load_model: Callable[[], Any], settings: ServerSettings) -> FastAPI:
    """An app that loads its model in the background: /health says 503 until it is ready."""
    state = _State()
    metrics = Metrics(state)
    limiter = RateLimiter(settings.rate_limit)

    def load() -> None:
        try:
            state.model = load_model()
            kv = parse_kv_memory(settings.kv_memory) if settings.kv_memory else None
            state.scheduler = Scheduler(state.model, settings.max_batch, settings.max_waiting,
                                        kv, settings.prefill_chunk)
            metrics.set_backend(state.model)
            state.ready.set()
            log.info("model ready on %s", state.model.backend.name)
        except Exception as e:  # reported by /health and every request
            log.exception("model failed to load")
            state.error = f"{type(e).__name__}: {e}"

    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=load, name="bitnet-load", daemon=True).start()
        yield
        if state.scheduler is not None:
            state.scheduler.close()

    app = FastAPI(title="bitnet", version=_version(), lifespan=lifespan,
                  description="OpenAI-compatible API for BitNet b1.58 models.")
    app.state.bitnet = state
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"], allow_headers=["*"])

    @app.exception_handler(APIError)
    async def _api_error(_req: HTTPRequest, e: APIError) -> JSONResponse:
        metrics.errors.labels(code=str(e.status)).inc()
        return JSONResponse(error_body(e.message, e.type, e.param, e.code), status_code=e.status)

    @app.exception_handler(HTTPException)
    async def _http_error(_req: HTTPRequest, e: HTTPException) -> JSONResponse:
        # framework errors (an undecodable body, an unknown path) in OpenAI's shape too
        metrics.errors.labels(code=str(e.status_code)).inc()
        message = str(e.detail)
        if e.status_code == 400 and "parsing the body" in message:
            message = "the request body is not valid JSON (or not UTF-8)"
        kind = "invalid_request_error" if e.status_code < 500 else "server_error"
        return JSONResponse(error_body(message, kind), status_code=e.status_code,
                            headers=getattr(e, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: HTTPRequest, e: RequestValidationError) -> JSONResponse:
        metrics.errors.labels(code="400").inc()
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        msg = first.get("msg", "invalid request")
        if first.get("type") == "json_invalid":
            msg = "the request body is not valid JSON (or not UTF-8)"
        return JSONResponse(error_body(msg, "invalid_request_error", where), status_code=400)

    def authorize(request: HTTPRequest) -> str:
        """Checks the API key (constant-time) and the rate limit; returns the caller's key."""
        caller = request.client.host if request.client else "unknown"
        if settings.api_keys:
            header = request.headers.get("authorization", "")
            given = header[7:] if header.lower().startswith("bearer ") else ""
            ok = False
            for key in settings.api_keys:  # compare against every key: no early exit
                ok |= hmac.compare_digest(given.encode(), key.encode())
            if not ok:
                raise APIError(401, "invalid or missing API key (Authorization: Bearer KEY)",
                               code="invalid_api_key")
            caller = given
        if not limiter.allow(caller):
            raise APIError(429, "rate limit exceeded, retry later", "rate_limit_error",
                           code="rate_limit_exceeded")
        return caller

    def ready_model() -> Any:
        if state.error:
            raise APIError(503, f"the model failed to load: {state.error}", "server_error")
        if not state.ready.is_set():
            raise APIError(503, "the model is still loading", "server_error",
                           code="model_loading")
        return state.model

    def check_model_name(name: str | None) -> None:
        if name is not None and name != settings.model_name:
            raise APIError(404, f"the model {name!r} does not exist; this server serves "
                                f"{settings.model_name!r}", param="model",
                           code="model_not_found")

    add_chat_page(app)  # no key needed to load it; its API calls carry one

    @app.get("/health")
    async def health() -> JSONResponse:
        if state.error:
            return JSONResponse({"status": "error", "error": state.error}, status_code=503)
        if not state.ready.is_set():
            return JSONResponse({"status": "loading"}, status_code=503)
        m, sched = state.model, state.scheduler
        kv = {"blocks": sched.pool.n_blocks, "used": sched.pool.used,
              "cached": sched.pool.cached, "block_positions": KV_BLOCK,
              "bytes": sched.budget.bytes, "sized_by": sched.budget.source}
        return JSONResponse({"status": "ok", "model": settings.model_name,
                             "backend": m.backend.name, "device": m.backend.device.name,
                             "pid": os.getpid(), "kv_pool": kv})

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type=metrics.content_type)

    @app.get("/v1/models")
    async def models(_caller: str = Depends(authorize)) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": settings.model_name, "object": "model",
                                            "created": 0, "owned_by": "bitnet"}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: HTTPRequest,
                          _caller: str = Depends(authorize)) -> Any:
        model = ready_model()
        check_model_name(body.model)
        prompt_ids, prompt_text = _completion_prompt(model, body)
        job = _job(model, body, prompt_ids, body.max_tokens, body.logprobs, settings)
        return await _respond(request, state, metrics, job, body, "text_completion",
                              settings.model_name, prompt_text if body.echo else "")

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: HTTPRequest,
                               _caller: str = Depends(authorize)) -> Any:
        model = ready_model()
        check_model_name(body.model)
        prompt_ids = _chat_prompt(model, body)
        limit = body.max_completion_tokens if body.max_completion_tokens is not None \
            else body.max_tokens
        k = (body.top_logprobs or 0) if body.logprobs else None
        job = _job(model, body, prompt_ids, limit, k, settings)
        job.fresh_text = True
        return await _respond(request, state, metrics, job, body, "chat.completion",
                              settings.model_name, "")

    return app


def _version() -> str:
    from bitnet import __version__

    return __version__


def _completion_prompt(model: Any, body: CompletionRequest) -> tuple[list[int], str]:
    p = body.prompt
    if isinstance(p, list) and p and all(isinstance(x, int) for x in p):
        bad = [t for t in p if not 0 <= t < model.config.n_vocab]
        if bad:
            raise APIError(400, f"token id {bad[0]} is outside the vocabulary", param="prompt")
        return list(p), model.tokenizer.decode(list(p))
    if isinstance(p, list):
        if len(p) != 1:
            raise APIError(400, "send one prompt per request (n=1)", param="prompt")
        p = p[0]
    if not isinstance(p, str):
        raise APIError(400, "prompt must be a string or a list of token ids", param="prompt")
    return model.tokenizer.encode(p), p


def _chat_prompt(model: Any, body: ChatRequest) -> list[int]:
    from bitnet.core.chat import ChatTemplateError, render_chat

    tok = model.tokenizer
    template = body.chat_template or model.chat_template
    messages = [{"role": m.role, "content": m.content} for m in body.messages]
    bos = model._special_text(tok.bos_id)
    try:
        text = render_chat(messages, template, bos_token=bos,
                           eos_token=model._special_text(tok.eos_id), add_generation_prompt=True,
                           builtin=getattr(model, "chat_format", "bitnet"))
    except ChatTemplateError as e:
        raise APIError(400, f"chat template error: {e}", param="chat_template") from None
    return tok.encode(text, add_bos=not (bos and text.startswith(bos)), parse_special=True)


@dataclass
class _Job:
    prompt: list[int]
    params: SamplingParams
    max_tokens: int
    stops: list[str]
    logprobs: int | None
    ignore_eos: bool
    fresh_text: bool = False


def _job(model: Any, body: Any, prompt: list[int], max_tokens: int | None,
         logprobs: int | None, settings: ServerSettings) -> _Job:
    n_ctx = model.transformer.n_ctx
    if not prompt:
        raise APIError(400, "the prompt is empty", param="prompt")
    if len(prompt) >= n_ctx:
        raise APIError(400, f"the prompt has {len(prompt)} tokens; this model's context is "
                            f"{n_ctx}", param="prompt", code="context_length_exceeded")
    limit = min(settings.max_tokens_limit, n_ctx - len(prompt))
    if max_tokens is None:
        max_tokens = limit
    elif max_tokens > settings.max_tokens_limit:
        raise APIError(400, f"max_tokens must be <= {settings.max_tokens_limit}",
                       param="max_tokens")
    try:
        params = SamplingParams(temperature=body.temperature, top_k=body.top_k, top_p=body.top_p,
                                min_p=body.min_p, repeat_penalty=body.repetition_penalty,
                                presence_penalty=body.presence_penalty,
                                frequency_penalty=body.frequency_penalty, seed=body.seed)
    except ValueError as e:
        raise APIError(400, str(e)) from None
    return _Job(prompt, params, max_tokens, body.stop_list, logprobs, body.ignore_eos)


class _Inbox:
    """One request's events, from the scheduler's thread to its handler on the event loop.

    The worker wakes the loop only when the handler has nothing pending, and for a reply that
    is not streamed only on the last event: at most one wake-up per decode step, none per token
    of a plain completion. (With one ``call_soon_threadsafe`` per token, a single client's
    decode on the demo model ran at ~1300 tok/s; with this, ~2000.)"""

    def __init__(self, loop: asyncio.AbstractEventLoop, wake_on_tokens: bool) -> None:
        self._loop = loop
        self._wake_on_tokens = wake_on_tokens
        self._items: deque[Event] = deque()
        self._lock = threading.Lock()
        self._woken = False
        self._ready = asyncio.Event()

    def put(self, ev: Event) -> None:
        """Called by the scheduler's thread."""
        with self._lock:
            self._items.append(ev)
            if self._woken or (ev.kind == "token" and not self._wake_on_tokens):
                return
            self._woken = True
        self._loop.call_soon_threadsafe(self._ready.set)

    async def next_batch(self, request: HTTPRequest) -> list[Event] | None:
        """Every event so far (waits for at least one); None once the client has gone."""
        while True:
            try:
                await asyncio.wait_for(self._ready.wait(), timeout=0.5)
            except asyncio.TimeoutError:
                if await request.is_disconnected():
                    return None
                continue
            with self._lock:
                self._ready.clear()
                self._woken = False
                items = list(self._items)
                self._items.clear()
            if items:
                return items


async def _respond(request: HTTPRequest, state: _State, metrics: Metrics, job: _Job, body: Any,
                   kind: str, model_name: str, echo: str) -> Any:
    events = _Inbox(asyncio.get_running_loop(), wake_on_tokens=bool(body.stream))
    req = Request(job.prompt, job.params, job.max_tokens, events.put, job.stops,
                  ignore_eos=job.ignore_eos, logprobs=job.logprobs, fresh_text=job.fresh_text)
    try:
        state.scheduler.submit(req)
    except QueueFullError as e:
        raise APIError(429, str(e), "rate_limit_error", code="server_busy") from None
    metrics.requests.labels(endpoint=kind).inc()
    rid = ("cmpl-" if kind == "text_completion" else "chatcmpl-") + uuid.uuid4().hex[:24]
    created = int(time.time())
    tok = state.model.tokenizer
    if body.stream:
        include_usage = bool((body.stream_options or {}).get("include_usage"))
        return StreamingResponse(
            _sse(request, req, events, kind, rid, created, model_name, tok, echo, include_usage),
            media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    pieces, tokens, finish, error = [], [], None, None
    try:
        while finish is None and error is None:
            batch = await events.next_batch(request)
            if batch is None:
                req.cancel()  # the client went away: its blocks go at the next step
                return JSONResponse({}, status_code=499)
            for ev in batch:
                if ev.kind == "error":
                    error = ev.message
                    break
                pieces.append(ev.text)
                if ev.token is not None:
                    tokens.append(ev)
                if ev.kind == "done":
                    finish = ev.finish_reason
                    break
    except asyncio.CancelledError:
        req.cancel()
        raise
    if error:
        raise APIError(500, f"generation failed: {error}", "server_error")
    text = echo + "".join(pieces)
    usage = {"prompt_tokens": len(job.prompt), "completion_tokens": len(tokens),
             "total_tokens": len(job.prompt) + len(tokens)}
    metrics.count_tokens(len(job.prompt), len(tokens))
    if kind == "text_completion":
        choice = {"index": 0, "text": text, "finish_reason": finish,
                  "logprobs": _completion_logprobs(tok, tokens) if job.logprobs is not None
                  else None}
    else:
        choice = {"index": 0, "message": {"role": "assistant", "content": text},
                  "finish_reason": finish,
                  "logprobs": _chat_logprobs(tok, tokens) if job.logprobs is not None else None}
    return {"id": rid, "object": kind, "created": created, "model": model_name,
            "choices": [choice], "usage": usage}


async def _sse(request: HTTPRequest, req: Request, events: "_Inbox", kind: str,
               rid: str, created: int, model_name: str, tok: Any, echo: str,
               include_usage: bool) -> AsyncIterator[bytes]:
    chunk_kind = "text_completion" if kind == "text_completion" else "chat.completion.chunk"

    def frame(choice: dict[str, Any], usage: dict[str, int] | None = None) -> bytes:
        body: dict[str, Any] = {"id": rid, "object": chunk_kind, "created": created,
                                "model": model_name, "choices": [choice] if choice else []}
        if usage is not None:
            body["usage"] = usage
        return f"data: {json.dumps(body)}\n\n".encode()

    def piece(text: str, ev: Event | None, finish: str | None) -> dict[str, Any]:
        if kind == "text_completion":
            lp = _completion_logprobs(tok, [ev]) if ev and req.logprobs is not None else None
            return {"index": 0, "text": text, "logprobs": lp, "finish_reason": finish}
        lp = _chat_logprobs(tok, [ev]) if ev and req.logprobs is not None else None
        delta = {"content": text} if text or finish is None else {}
        return {"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}

    n_tokens = 0
    try:
        if kind != "text_completion":
            yield frame({"index": 0, "delta": {"role": "assistant", "content": ""},
                         "logprobs": None, "finish_reason": None})
        elif echo:
            yield frame(piece(echo, None, None))
        finished = False
        while not finished:
            batch = await events.next_batch(request)
            if batch is None:
                return  # the client went away
            for ev in batch:
                if ev.kind == "error":
                    err = error_body(f"generation failed: {ev.message}", "server_error")
                    yield f"data: {json.dumps(err)}\n\n".encode()
                    finished = True
                    break
                if ev.token is not None:
                    n_tokens += 1
                if ev.kind == "done":
                    if ev.text:
                        yield frame(piece(ev.text, None, None))
                    yield frame(piece("", None, ev.finish_reason))
                    if include_usage:
                        yield frame({}, {"prompt_tokens": len(req.prompt),
                                         "completion_tokens": n_tokens,
                                         "total_tokens": len(req.prompt) + n_tokens})
                    finished = True
                    break
                if ev.text or req.logprobs is not None:
                    yield frame(piece(ev.text, ev, None))
        yield b"data: [DONE]\n\n"
    finally:
        req.cancel()  # a client that went away frees its blocks at once; a no-op once finished


def _token_text(tok: Any, token: int) -> str:
    return tok.token_to_piece(token).decode("utf-8", errors="replace")


def _completion_logprobs(tok: Any, events: list[Event]) -> dict[str, Any]:
    out: dict[str, Any] = {"tokens": [], "token_logprobs": [], "top_logprobs": [],
                           "text_offset": []}
    offset = 0
    for ev in events:
        text = _token_text(tok, ev.token)
        out["tokens"].append(text)
        out["token_logprobs"].append(ev.logprob)
        out["top_logprobs"].append({_token_text(tok, t): lp
                                    for t, lp in (ev.top_logprobs or {}).items()})
        out["text_offset"].append(offset)
        offset += len(text)
    return out


def _chat_logprobs(tok: Any, events: list[Event]) -> dict[str, Any]:
    def entry(t: int, lp: float) -> dict[str, Any]:
        raw = tok.token_to_piece(t)
        return {"token": raw.decode("utf-8", errors="replace"), "logprob": lp,
                "bytes": list(raw)}

    content = []
    for ev in events:
        item = entry(ev.token, ev.logprob)
        item["top_logprobs"] = [entry(t, lp) for t, lp in (ev.top_logprobs or {}).items()]
        content.append(item)
    return {"content": content}
