"""The OpenAI-compatible HTTP app over an `Engine`: chat completions (text and speech, streamed or not),
transcriptions, speech, models, health, and the Realtime websocket (`realtime.py`).

Every route turns its body into a `ChatRequest` (`protocol.py`), submits it and forwards the engine's events; any
mistake becomes a 4xx in OpenAI's error shape and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .audio import AudioError, Pcm16Stream, b64, encode_audio, read_audio
from .engine import AudioDelta, ChatRequest, Engine, EngineBusy, Failed, Finished, RequestHandle, TextDelta
from .limits import ApiKeyAndBodyLimit
from .protocol import (
    MAX_TEXT_CHARS,
    VOICES,
    APIError,
    ChatOptions,
    ServerConfig,
    check_model,
    expect,
    new_id,
    parse_chat_request,
    sampling_from,
    task_conversation,
)

logger = logging.getLogger(__name__)
POLL_SECONDS = 0.25  # how often a waiting request checks whether its client is still there
SPEECH_FORMATS = ("wav", "mp3", "flac", "opus", "pcm")


class ClientGone(Exception):
    """The client closed the connection; its row has been cancelled."""


def create_app(engine: Engine, config: ServerConfig) -> FastAPI:
    """The app for one engine. The engine starts with the app and stops with it."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="OmniDRCA", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine, app.state.config = engine, config
    app.add_middleware(ApiKeyAndBodyLimit, config=config)
    _add_error_handlers(app)
    _add_routes(app, engine, config)
    from .realtime import router as realtime_router

    app.include_router(realtime_router)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request: Request, error: APIError):
        return JSONResponse(error.body(), status_code=error.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
        message = f"{request.method} {request.url.path}: {error.detail}"
        return JSONResponse(APIError(error.status_code, message, code=code).body(), status_code=error.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):  # no traceback to clients; the log has it
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(APIError(500, "The server failed on this request; see its log.").body(), 500)


async def read_json(request: Request) -> dict:
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "application/json":
        raise APIError(415, f"Expected a JSON body (Content-Type: application/json), got {kind or 'none'!r}.",
                       code="unsupported_media_type")
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise APIError(400, f"The body is not valid JSON: {error}.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, f"The body must be a JSON object, got {type(body).__name__}.", code="invalid_json")
    return body


def submit(engine: Engine, request: ChatRequest) -> RequestHandle:
    try:
        return engine.submit(request, loop=asyncio.get_running_loop())
    except EngineBusy as error:
        raise APIError(429, str(error), code="rate_limit_exceeded", type="rate_limit_error") from None


async def events(handle: RequestHandle, request: Request | None) -> AsyncIterator[TextDelta | AudioDelta | Finished]:
    """The handle's events until `Finished`; `Failed` raises its APIError; a gone client cancels the row."""
    checked = time.monotonic()
    while True:
        event = await handle.next(POLL_SECONDS)
        if request is not None and (event is None or time.monotonic() - checked >= POLL_SECONDS):
            checked = time.monotonic()  # events may never pause long enough for a timeout: check by the clock
            if await request.is_disconnected():
                handle.cancel()
                raise ClientGone
        if event is None:
            continue
        if isinstance(event, Failed):
            raise APIError(event.status, event.message, code=event.code)
        yield event
        if isinstance(event, Finished):
            return


async def collect(handle: RequestHandle, request: Request) -> tuple[Finished, np.ndarray]:
    chunks = []
    async for event in events(handle, request):
        if isinstance(event, AudioDelta):
            chunks.append(event.audio)
        elif isinstance(event, Finished):
            return event, (np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32))
    raise APIError(500, "The answer ended without finishing.")


def usage_body(finished: Finished) -> dict:
    u = finished.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens,
            "prompt_tokens_details": {"audio_tokens": u.prompt_audio_tokens, "cached_tokens": 0},
            "completion_tokens_details": {"audio_tokens": u.completion_audio_tokens, "reasoning_tokens": 0}}


def _add_routes(app: FastAPI, engine: Engine, config: ServerConfig) -> None:
    @app.get("/health")
    async def health():
        return {"status": "ok", "model": config.model_name, **engine.stats()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model_card(config)]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        check_model({"model": model_id}, config)
        return _model_card(config)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        chat, options = parse_chat_request(await read_json(request), config)
        if options.stream and options.audio_format not in (None, "pcm16"):
            raise APIError(400, "Streamed audio is sent as pcm16 chunks: set audio.format to \"pcm16\" with "
                           f"stream: true (got {options.audio_format!r}).", "audio.format", "invalid_value")
        handle = submit(engine, chat)
        if options.stream:
            return StreamingResponse(_chat_stream(handle, options, config, engine.sampling_rate, request),
                                     media_type="text/event-stream")
        try:
            finished, wave = await collect(handle, request)
        except ClientGone:
            return Response(status_code=499)
        return _chat_completion(finished, wave, options, config, engine.sampling_rate)

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        form = await _read_form(request)
        check_model({"model": form.get("model")}, config)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise APIError(400, "Missing required parameter: 'file' (the audio file, as a multipart upload).",
                           "file", "missing_required_parameter")
        response_format = form.get("response_format") or "json"
        if response_format not in ("json", "text"):
            raise APIError(400, f"'response_format' must be 'json' or 'text', got {response_format!r}.",
                           "response_format", "invalid_value")
        try:
            wave, rate = read_audio(await upload.read(), None, config.max_audio_seconds)
        except AudioError as error:
            raise APIError(400, str(error), "file", "invalid_audio") from None
        temperature = form.get("temperature")
        sampling = sampling_from({"temperature": _number(temperature, "temperature")} if temperature else {})
        conversation = task_conversation("asr", [{"type": "audio", "audio": wave, "sampling_rate": rate}])
        handle = submit(engine, ChatRequest(conversation, mode="text", sampling=sampling))
        try:
            finished, _ = await collect(handle, request)
        except ClientGone:
            return Response(status_code=499)
        if response_format == "text":
            return Response(finished.text, media_type="text/plain")
        u = finished.usage
        return {"text": finished.text, "usage": {"type": "tokens", "input_tokens": u.prompt_tokens,
                                                 "output_tokens": u.completion_tokens,
                                                 "total_tokens": u.prompt_tokens + u.completion_tokens}}

    @app.post("/v1/audio/speech")
    async def speech(request: Request):
        body = await read_json(request)
        check_model(body, config)
        text = expect(body, "input", str, required=True)
        if not text.strip() or len(text) > MAX_TEXT_CHARS:
            raise APIError(400, f"'input' must hold 1 to {MAX_TEXT_CHARS} characters, got {len(text)}.", "input",
                           "invalid_value")
        voice = expect(body, "voice", str, required=True)
        if voice not in VOICES:
            raise APIError(400, f"Unknown voice {voice!r}: expected one of {list(VOICES)} (all speak with the "
                           "model's voice).", "voice", "invalid_value")
        fmt = expect(body, "response_format", str, default="mp3")
        if fmt not in SPEECH_FORMATS:
            raise APIError(400, f"'response_format' must be one of {list(SPEECH_FORMATS)}, got {fmt!r}.",
                           "response_format", "invalid_value")
        speed = expect(body, "speed", (int, float), default=1.0)
        if speed != 1.0:
            raise APIError(400, f"Only speed 1.0 is supported (the model's own pace), got {speed}.", "speed",
                           "unsupported_value")
        handle = submit(engine, ChatRequest(task_conversation("t2s", text), mode="audio"))
        try:
            _, wave = await collect(handle, request)
        except ClientGone:
            return Response(status_code=499)
        media = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "opus": "audio/ogg",
                 "pcm": "audio/pcm"}[fmt]
        return Response(encode_audio(wave, engine.sampling_rate, fmt), media_type=media)


def _model_card(config: ServerConfig) -> dict:
    return {"id": config.model_name, "object": "model", "created": config.created, "owned_by": "omnidrca"}


def _number(value: str, name: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise APIError(400, f"'{name}' must be a number, got {value!r}.", name, "invalid_type") from None


async def _read_form(request: Request):
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "multipart/form-data":
        raise APIError(415, f"Expected a multipart/form-data upload with 'file' and 'model', got {kind or 'none'!r}.",
                       code="unsupported_media_type")
    try:
        return await request.form(max_files=1, max_fields=20)
    except Exception as error:  # starlette's MultiPartException and parser errors: the client's malformed body
        raise APIError(400, f"Could not read the multipart form: {error}.", code="invalid_form") from None


def _chat_completion(finished: Finished, wave: np.ndarray, options: ChatOptions, config: ServerConfig,
                     rate: int) -> dict:
    message = {"role": "assistant", "content": finished.text, "refusal": None}
    if options.audio_format is not None:
        message["audio"] = {"id": new_id("audio"), "data": b64(encode_audio(wave, rate, options.audio_format)),
                            "expires_at": int(time.time()) + 3600, "transcript": finished.text}
    return {"id": new_id("chatcmpl"), "object": "chat.completion", "created": int(time.time()),
            "model": config.model_name,
            "choices": [{"index": 0, "message": message, "finish_reason": finished.finish_reason, "logprobs": None}],
            "usage": usage_body(finished)}


async def _chat_stream(handle: RequestHandle, options: ChatOptions, config: ServerConfig, rate: int,
                       request: Request) -> AsyncIterator[str]:
    """Server-sent events: a role chunk, then text and pcm16 audio deltas as made, the finish, usage, [DONE]."""
    base = {"id": new_id("chatcmpl"), "object": "chat.completion.chunk", "created": int(time.time()),
            "model": config.model_name}
    audio_id = new_id("audio")
    pcm = Pcm16Stream(rate)  # one resampler per answer: chunks join without seams

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
        return f"data: {json.dumps({**base, 'choices': choices, **extra})}\n\n"

    try:
        yield chunk({"role": "assistant", "content": ""})
        # The stream checks for a gone client itself: servers that do not fail a send to a closed connection
        # (uvicorn before 0.31 under starlette's ASGI 2.4 path) would otherwise generate to nobody.
        async for event in events(handle, request):
            if isinstance(event, TextDelta):
                delta = {"content": event.text}
                if options.audio_format is not None:
                    delta["audio"] = {"id": audio_id, "transcript": event.text}
                yield chunk(delta)
            elif isinstance(event, AudioDelta):
                data = pcm.push(event.audio)
                if data:
                    yield chunk({"audio": {"id": audio_id, "data": b64(data)}})
            elif isinstance(event, Finished):
                tail = pcm.flush()
                if tail:
                    yield chunk({"audio": {"id": audio_id, "data": b64(tail)}})
                yield chunk({}, event.finish_reason)
                if options.include_usage:
                    yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage_body(event)})}\n\n"
        yield "data: [DONE]\n\n"
    except APIError as error:
        yield f"data: {json.dumps(error.body())}\n\n"
    except ClientGone:
        return
    finally:  # the client went away mid-stream (or the stream ended): free the row if it still has one
        handle.cancel()


__all__ = ["ClientGone", "create_app", "read_json", "submit"]
