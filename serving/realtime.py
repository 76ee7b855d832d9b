"""`WS /v1/realtime`: a subset of OpenAI's Realtime protocol over the engine, without server-side turn detection.

```
 client                                  server
 (connect)                               session.created
 session.update {session}                session.updated
 input_audio_buffer.append {audio}       (nothing: pcm16 at 24 kHz is buffered)
 input_audio_buffer.commit               input_audio_buffer.committed, conversation.item.created
 response.create                         response.created, response.output_item.added, ...deltas...,
                                         response.output_item.done, response.done
 response.cancel                         response.done (status "cancelled")
```

Each connection holds its own conversation: committed clips and typed messages are user turns, each answer's text
an assistant turn. An answer streams from its own task, so the socket keeps reading while it runs (cancel, more
audio); a mistake answers an `error` event and the connection keeps working.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from modeling_omnidrca.processing_omnidrca import SYSTEM_PROMPTS

from .app import submit
from .audio import PCM16_RATE, AudioError, Pcm16Stream, b64, decode_base64, pcm16_to_wave
from .engine import AudioDelta, ChatRequest, Engine, Failed, Finished, RequestHandle, SamplingParams, TextDelta
from .protocol import MAX_TEXT_CHARS, VOICES, APIError, ServerConfig, new_id, sampling_from

logger = logging.getLogger(__name__)
router = APIRouter()
MIN_COMMIT_SECONDS = 0.1
PCM_FORMAT = {"type": "audio/pcm", "rate": PCM16_RATE}
MODALITIES = {("text",): ["text"], ("audio",): ["audio"], ("audio", "text"): ["audio"]}  # audio always has text


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    # Browsers offer "realtime" (and the key as a subprotocol); they drop a socket that selects none of theirs.
    offered = websocket.scope.get("subprotocols") or []
    await websocket.accept(subprotocol="realtime" if "realtime" in offered else None)
    config: ServerConfig = websocket.app.state.config
    model = websocket.query_params.get("model")
    if model is not None and model != config.model_name:
        error = APIError(404, f"The model '{model}' does not exist on this server; it serves '{config.model_name}'.",
                         "model", "model_not_found")
        await websocket.send_text(json.dumps(_error_event(error, None)))
        return await websocket.close(1008)
    await Connection(websocket, websocket.app.state.engine, config).run()


@dataclass
class Response:
    """The answer being generated; `text` grows with its deltas so that a cancel can report what was said."""

    id: str
    item_id: str
    mode: str
    position: int  # where its assistant turn goes in the history (user turns may be committed meanwhile)
    handle: RequestHandle
    text: list[str] = field(default_factory=list)
    task: asyncio.Task | None = None


class Connection:
    """One client's session settings, audio buffer, conversation and (at most one) running response."""

    def __init__(self, websocket: WebSocket, engine: Engine, config: ServerConfig):
        self.websocket, self.engine, self.config = websocket, engine, config
        self.session: dict[str, Any] = {"id": new_id("sess"), "instructions": SYSTEM_PROMPTS["s2s"],
                                        "output_modalities": ["audio"], "voice": "alloy", "temperature": None,
                                        "max_output_tokens": "inf"}
        self.buffer = bytearray()
        self.history: list[dict] = []
        self.last_item_id: str | None = None
        self.awaiting_answer = False  # a user item arrived since the last response
        self.active: Response | None = None
        self._send_lock = asyncio.Lock()  # the reader and the response task both send
        self.handlers = {
            "session.update": self.session_update, "input_audio_buffer.append": self.buffer_append,
            "input_audio_buffer.clear": self.buffer_clear, "input_audio_buffer.commit": self.buffer_commit,
            "conversation.item.create": self.item_create, "response.create": self.response_create,
            "response.cancel": self.response_cancel,
        }

    async def run(self) -> None:
        await self.send("session.created", session=self.session_body())
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                await self.dispatch(message.get("text"))
        except WebSocketDisconnect:
            pass
        finally:  # a gone client's answer must leave the engine
            await self.stop_response()

    async def dispatch(self, text: str | None) -> None:
        client_event_id = None
        try:
            event = _parse(text)
            client_event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
            await self.handler_for(event)(event)
        except APIError as error:
            await self.send_raw(_error_event(error, client_event_id))
        except WebSocketDisconnect:
            raise
        except Exception:  # no traceback to clients; the log has it
            logger.exception("realtime event failed")
            await self.send_raw(_error_event(APIError(500, "The server failed on this event; see its log."),
                                             client_event_id))

    def handler_for(self, event: dict) -> Callable[[dict], Awaitable[None]]:
        kind = event.get("type")
        if not isinstance(kind, str):
            raise APIError(400, "Missing required parameter: 'type'.", "type", "missing_required_parameter")
        if kind not in self.handlers:
            raise APIError(400, f"Invalid value: '{kind[:100]}'. Supported event types: {list(self.handlers)}.",
                           "type", "invalid_value")
        return self.handlers[kind]

    # ---------------------------------------------------------------------------------------- session

    async def session_update(self, event: dict) -> None:
        self.session = self.settings(_object(event, "session"), "session")
        await self.send("session.updated", session=self.session_body())

    def settings(self, update: dict, where: str) -> dict:
        """The session's settings with `update` applied, all checked first so that a bad value changes nothing."""
        new = dict(self.session)
        if "instructions" in update:
            instructions = update["instructions"]
            if not isinstance(instructions, str) or len(instructions) > MAX_TEXT_CHARS:
                raise APIError(400, f"'instructions' must be a string of at most {MAX_TEXT_CHARS} characters.",
                               f"{where}.instructions", "invalid_value")
            new["instructions"] = instructions
        for key in ("output_modalities", "modalities"):  # `modalities`: the beta's name
            if key in update:
                new["output_modalities"] = _modalities(update[key], f"{where}.{key}")
        audio = update.get("audio") if isinstance(update.get("audio"), dict) else {}
        voice = update.get("voice", (audio.get("output") or {}).get("voice"))
        if voice is not None:
            if voice not in VOICES:
                raise APIError(400, f"Unknown voice {voice!r}: expected one of {list(VOICES)} (all speak with the "
                               "model's voice).", f"{where}.voice", "invalid_value")
            new["voice"] = voice
        if "temperature" in update:
            try:
                new["temperature"] = sampling_from({"temperature": update["temperature"]}).temperature
            except APIError as error:
                raise APIError(400, error.message, f"{where}.temperature", error.code) from None
        for key in ("max_output_tokens", "max_response_output_tokens"):  # the latter: the beta's name
            if key in update:
                new["max_output_tokens"] = self._max_tokens(update[key], f"{where}.{key}")
        _check_unsupported(update, audio, where)
        return new

    def _max_tokens(self, value: Any, param: str) -> int | str:
        if value == "inf" or (isinstance(value, int) and not isinstance(value, bool)
                              and 1 <= value <= self.config.max_tokens):
            return value
        raise APIError(400, f"'{param}' must be an integer from 1 to {self.config.max_tokens} (answer steps of "
                       f"0.2 s) or \"inf\", got {value!r}.", param, "invalid_value")

    def session_body(self) -> dict:
        s = self.session
        return {"id": s["id"], "object": "realtime.session", "type": "realtime", "model": self.config.model_name,
                "output_modalities": s["output_modalities"], "instructions": s["instructions"],
                "audio": {"input": {"format": PCM_FORMAT, "turn_detection": None, "transcription": None},
                          "output": {"format": PCM_FORMAT, "voice": s["voice"], "speed": 1.0}},
                "input_audio_format": "pcm16", "output_audio_format": "pcm16", "voice": s["voice"],
                "turn_detection": None, "temperature": s["temperature"], "max_output_tokens": s["max_output_tokens"],
                "tools": [], "tool_choice": "none"}

    # ------------------------------------------------------------------------------ input audio buffer

    async def buffer_append(self, event: dict) -> None:
        try:
            raw = decode_base64(event.get("audio"), "audio")
            if len(raw) % 2:
                raise AudioError("pcm16 audio must hold whole 16-bit samples (an even number of bytes).")
        except AudioError as error:
            raise APIError(400, str(error), "audio", "invalid_audio") from None
        seconds = (len(self.buffer) + len(raw)) / 2 / PCM16_RATE
        if seconds > self.config.max_audio_seconds:
            raise APIError(400, f"The input audio buffer would hold {seconds:.1f} s; this server takes clips of at "
                           f"most {self.config.max_audio_seconds:g} s: commit or clear it first.", "audio",
                           "input_audio_buffer_too_long")
        self.buffer += raw

    async def buffer_clear(self, event: dict) -> None:
        self.buffer.clear()
        await self.send("input_audio_buffer.cleared")

    async def buffer_commit(self, event: dict) -> None:
        seconds = len(self.buffer) / 2 / PCM16_RATE
        if seconds < MIN_COMMIT_SECONDS:
            raise APIError(400, f"Error committing input audio buffer: buffer too small. Expected at least "
                           f"{MIN_COMMIT_SECONDS * 1000:g}ms of audio, but buffer only has {seconds * 1000:.2f}ms "
                           "of audio.", None, "input_audio_buffer_commit_empty")
        wave = pcm16_to_wave(bytes(self.buffer))
        self.buffer.clear()
        item_id, previous = new_id("item"), self.last_item_id
        await self.send("input_audio_buffer.committed", previous_item_id=previous, item_id=item_id)
        await self.add_user_item(item_id, [{"type": "audio", "audio": wave, "sampling_rate": PCM16_RATE}],
                                 [{"type": "input_audio", "transcript": None}])

    async def item_create(self, event: dict) -> None:
        item = _object(event, "item")
        if item.get("type") != "message" or item.get("role") != "user":
            raise APIError(400, "Only user messages can be added: {\"type\": \"message\", \"role\": \"user\", "
                           "\"content\": [{\"type\": \"input_text\", \"text\": ...}]}.", "item", "invalid_value")
        content = item.get("content")
        if not isinstance(content, list) or not content:
            raise APIError(400, "'item.content' must be a non-empty array.", "item.content", "invalid_value")
        parts = [_user_part(part, f"item.content[{i}]", self.config) for i, part in enumerate(content)]
        shown = [{"type": "input_text", "text": p["text"]} if p["type"] == "text"
                 else {"type": "input_audio", "transcript": None} for p in parts]
        await self.add_user_item(item.get("id") if isinstance(item.get("id"), str) else new_id("item"), parts, shown)

    async def add_user_item(self, item_id: str, parts: list[dict], shown: list[dict]) -> None:
        previous, self.last_item_id = self.last_item_id, item_id
        self.history.append({"role": "user", "content": parts})
        self.awaiting_answer = True
        item = {"id": item_id, "object": "realtime.item", "type": "message", "status": "completed", "role": "user",
                "content": shown}
        await self.send("conversation.item.created", previous_item_id=previous, item=item)

    # -------------------------------------------------------------------------------------- responses

    async def response_create(self, event: dict) -> None:
        if self.active is not None:
            raise APIError(400, f"Conversation already has an active response in progress: {self.active.id}. Wait "
                           "until the response is finished before creating a new one.", None,
                           "conversation_already_has_active_response")
        if not self.awaiting_answer:
            raise APIError(400, "There is no new user input to answer: commit the input audio buffer (or create a "
                           "user item) before response.create.", None, "no_user_input")
        overrides = event.get("response")
        settings = self.settings(overrides, "response") if isinstance(overrides, dict) else self.session
        mode = "audio" if "audio" in settings["output_modalities"] else "text"
        limit = settings["max_output_tokens"]
        request = ChatRequest([{"role": "system", "content": settings["instructions"]}, *self.history], mode=mode,
                              sampling=SamplingParams(temperature=settings["temperature"]),
                              max_tokens=None if limit == "inf" else limit)
        handle = submit(self.engine, request)
        response = self.active = Response(new_id("resp"), new_id("item"), mode, len(self.history), handle)
        self.awaiting_answer = False
        await self.send("response.created", response=self.response_body(response, "in_progress", None, []))
        await self.send("response.output_item.added", response_id=response.id, output_index=0,
                        item=self.item_body(response, "in_progress", with_content=False))
        await self.send("response.content_part.added", **self.where(response), part=self.part_body(response))
        response.task = asyncio.create_task(self.stream(response))

    async def response_cancel(self, event: dict) -> None:
        response = self.active
        if response is None:
            raise APIError(400, "Cancellation failed: no active response found.", None, "response_cancel_not_active")
        await self.stop_response()
        self.record_answer(response)
        await self.send("response.done", response=self.response_body(
            response, "cancelled", {"type": "cancelled", "reason": "client_cancelled"},
            [self.item_body(response, "incomplete")]))

    async def stop_response(self) -> None:
        response, self.active = self.active, None
        if response is None:
            return
        response.handle.cancel()  # its row leaves at the engine's next step
        if response.task is not None:  # None: sending response.created failed
            async with self._send_lock:  # cancel between sends, never inside one: the client's frames stay whole
                response.task.cancel()
            await asyncio.wait([response.task])

    async def stream(self, response: Response) -> None:
        pcm = Pcm16Stream(self.engine.sampling_rate)  # one resampler per answer: chunks join without seams
        try:
            async for event in response.handle:
                if isinstance(event, TextDelta):
                    response.text.append(event.text)
                    kind = "response.output_audio_transcript.delta" if response.mode == "audio" else \
                        "response.output_text.delta"
                    await self.send(kind, **self.where(response), delta=event.text)
                elif isinstance(event, AudioDelta):
                    audio = pcm.push(event.audio)
                    if audio:
                        await self.send("response.output_audio.delta", **self.where(response), delta=b64(audio))
                elif isinstance(event, Finished):
                    tail = pcm.flush()
                    if tail:
                        await self.send("response.output_audio.delta", **self.where(response), delta=b64(tail))
                    await self.finish(response, event)
                elif isinstance(event, Failed):
                    await self.fail(response, APIError(event.status, event.message, code=event.code))
        except WebSocketDisconnect:
            pass  # the reader sees it too and cleans up
        except Exception:  # a bug: this answer is over, the connection goes on
            logger.warning("realtime response %s stopped", response.id, exc_info=True)
        finally:
            response.handle.cancel()
            if self.active is response:
                self.active = None

    async def finish(self, response: Response, finished: Finished) -> None:
        # Done before any send: a response.create meanwhile sees this answer in the history, a cancel sees none.
        self.active = None
        response.text = [finished.text]
        self.record_answer(response)
        where = self.where(response)
        if response.mode == "audio":
            await self.send("response.output_audio.done", **where)
            await self.send("response.output_audio_transcript.done", **where, transcript=finished.text)
        else:
            await self.send("response.output_text.done", **where, text=finished.text)
        await self.send("response.content_part.done", **where, part=self.part_body(response))
        item = self.item_body(response, "completed")
        await self.send("response.output_item.done", response_id=response.id, output_index=0, item=item)
        length = finished.finish_reason == "length"
        details = {"type": "incomplete", "reason": "max_output_tokens"} if length else None
        await self.send("response.done", response=self.response_body(
            response, "incomplete" if length else "completed", details, [item], _usage(finished)))

    async def fail(self, response: Response, error: APIError) -> None:
        self.active = None
        await self.send_raw(_error_event(error, None))
        details = {"type": "failed", "error": {"type": error.type, "code": error.code}}
        await self.send("response.done", response=self.response_body(response, "failed", details, []))

    def record_answer(self, response: Response) -> None:
        """The answer's text becomes an assistant turn (earlier answers are text only in the chat template)."""
        text = "".join(response.text)
        if text:
            self.history.insert(response.position, {"role": "assistant", "content": text})

    # ---------------------------------------------------------------------------------------- shapes

    def where(self, response: Response) -> dict:
        return {"response_id": response.id, "item_id": response.item_id, "output_index": 0, "content_index": 0}

    def part_body(self, response: Response) -> dict:
        text = "".join(response.text)
        return {"type": "output_audio", "transcript": text} if response.mode == "audio" else \
            {"type": "output_text", "text": text}

    def item_body(self, response: Response, status: str, with_content: bool = True) -> dict:
        return {"id": response.item_id, "object": "realtime.item", "type": "message", "status": status,
                "role": "assistant", "content": [self.part_body(response)] if with_content else []}

    def response_body(self, response: Response, status: str, details: dict | None, output: list[dict],
                      usage: dict | None = None) -> dict:
        return {"id": response.id, "object": "realtime.response", "status": status, "status_details": details,
                "output": output, "output_modalities": [response.mode], "usage": usage}

    async def send(self, kind: str, **fields: Any) -> None:
        await self.send_raw({"type": kind, "event_id": new_id("event"), **fields})

    async def send_raw(self, event: dict) -> None:
        async with self._send_lock:
            if self.websocket.client_state == WebSocketState.CONNECTED:
                await self.websocket.send_text(json.dumps(event))


def _parse(text: str | None) -> dict:
    if text is None:
        raise APIError(400, "Events are JSON text frames; got a binary frame.", None, "invalid_json")
    try:
        event = json.loads(text)
    except json.JSONDecodeError as error:
        raise APIError(400, f"The event is not valid JSON: {error}.", None, "invalid_json") from None
    if not isinstance(event, dict):
        raise APIError(400, f"An event must be a JSON object, got {type(event).__name__}.", None, "invalid_json")
    return event


def _object(event: dict, name: str) -> dict:
    value = event.get(name)
    if not isinstance(value, dict):
        raise APIError(400, f"'{name}' must be an object.", name, "invalid_type")
    return value


def _modalities(value: Any, param: str) -> list[str]:
    key = tuple(sorted(set(value))) if isinstance(value, list) and all(isinstance(v, str) for v in value) else None
    if key not in MODALITIES:
        raise APIError(400, f"'{param}' must be [\"text\"] or [\"audio\"] (speech with its transcript), got "
                       f"{value!r}.", param, "invalid_value")
    return MODALITIES[key]


def _check_unsupported(update: dict, audio: dict, where: str) -> None:
    """Settings this server cannot honour are refused rather than ignored: a client would wait on them forever."""
    turn_detection = update.get("turn_detection", (audio.get("input") or {}).get("turn_detection"))
    if turn_detection is not None:
        raise APIError(400, "Server-side turn detection is not supported: set 'turn_detection' to null and send "
                       "input_audio_buffer.commit and response.create yourself.", f"{where}.turn_detection",
                       "unsupported_value")
    if update.get("tools"):
        raise APIError(400, "Tools are not supported by this model's server.", f"{where}.tools", "unsupported_value")
    for key in ("input_audio_format", "output_audio_format"):
        if update.get(key) not in (None, "pcm16"):
            raise APIError(400, f"'{key}' must be \"pcm16\" (24 kHz mono), got {update[key]!r}.", f"{where}.{key}",
                           "unsupported_value")
    for side in ("input", "output"):
        fmt = (audio.get(side) or {}).get("format")
        if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") not in ("audio/pcm", "pcm16")
                                or fmt.get("rate", PCM16_RATE) != PCM16_RATE):
            raise APIError(400, f"'audio.{side}.format' must be {PCM_FORMAT}, got {fmt!r}.",
                           f"{where}.audio.{side}.format", "unsupported_value")


def _user_part(part: Any, param: str, config: ServerConfig) -> dict:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "input_text" and isinstance(part.get("text"), str) and 0 < len(part["text"]) <= MAX_TEXT_CHARS:
        return {"type": "text", "text": part["text"]}
    if kind == "input_audio":
        try:
            wave = pcm16_to_wave(decode_base64(part.get("audio"), f"{param}.audio"))
        except AudioError as error:
            raise APIError(400, str(error), f"{param}.audio", "invalid_audio") from None
        if not MIN_COMMIT_SECONDS <= len(wave) / PCM16_RATE <= config.max_audio_seconds:
            raise APIError(400, f"'{param}.audio' must hold {MIN_COMMIT_SECONDS} to {config.max_audio_seconds:g} s "
                           "of pcm16 at 24 kHz.", f"{param}.audio", "invalid_audio")
        return {"type": "audio", "audio": wave, "sampling_rate": PCM16_RATE}
    raise APIError(400, f"'{param}' must be {{\"type\": \"input_text\", \"text\": ...}} (1 to {MAX_TEXT_CHARS} "
                   "characters) or {\"type\": \"input_audio\", \"audio\": base64 pcm16}.", param, "invalid_value")


def _usage(finished: Finished) -> dict:
    u = finished.usage
    return {"total_tokens": u.prompt_tokens + u.completion_tokens, "input_tokens": u.prompt_tokens,
            "output_tokens": u.completion_tokens,
            "input_token_details": {"text_tokens": u.prompt_tokens - u.prompt_audio_tokens,
                                    "audio_tokens": u.prompt_audio_tokens, "cached_tokens": 0},
            "output_token_details": {"text_tokens": u.completion_tokens, "audio_tokens": u.completion_audio_tokens}}


def _error_event(error: APIError, client_event_id: str | None) -> dict:
    body = error.body()["error"]
    return {"type": "error", "event_id": new_id("event"), "error": {**body, "event_id": client_event_id}}


__all__ = ["Connection", "router"]
