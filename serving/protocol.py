"""OpenAI's request and error shapes, checked by hand so that every mistake gets a message that names the field.

`parse_chat_request` turns a `/v1/chat/completions` body into the engine's `ChatRequest` plus how to answer
(stream or not, audio format); anything it cannot take raises `APIError`, which the app sends back as
`{"error": {"message", "type", "param", "code"}}` with its status.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from modeling_omnidrca.processing_omnidrca import SYSTEM_PROMPTS

from .audio import OUTPUT_FORMATS, AudioError, decode_base64, read_audio
from .engine import ChatRequest, SamplingParams

# OpenAI's voice names, accepted so that existing clients work unchanged: the model has one trained voice and
# speaks with it whichever is named.
VOICES = ("omnidrca", "alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse",
          "marin", "cedar")
ROLES = ("system", "developer", "user", "assistant")
MAX_TEXT_CHARS = 4096  # per text part, and /v1/audio/speech's input (OpenAI's limit there too)


class APIError(Exception):
    """An error the client caused (or a busy/failed server), sent as OpenAI's error object."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass
class ServerConfig:
    """What the operator chose when starting the server."""

    model_name: str  # the id clients send as `model` and see in /v1/models
    api_key: str | None = None
    max_body_bytes: int = 25 * 1024 * 1024  # OpenAI's upload limit for audio files
    max_audio_seconds: float = 30.0  # the Whisper encoder's window
    max_tokens: int = 256  # the longest answer, in 5 Hz steps (one text token each)
    created: int = 0  # /v1/models' `created`: when the server loaded the model


@dataclass
class ChatOptions:
    """How to answer a chat request (the engine does not need these)."""

    stream: bool
    audio_format: str | None  # None: text only
    voice: str | None
    include_usage: bool


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def expect(body: dict, name: str, kind: type | tuple, required: bool = False, default: Any = None) -> Any:
    value = body.get(name, None)
    if value is None:
        if required:
            raise APIError(400, f"Missing required parameter: '{name}'.", name, "missing_required_parameter")
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:  # JSON true/false would pass as an int otherwise
        raise APIError(400, f"'{name}' must be {_kind_name(kind)}, got a boolean.", name, "invalid_type")
    if not isinstance(value, kind):
        raise APIError(400, f"'{name}' must be {_kind_name(kind)}, got {type(value).__name__}.", name, "invalid_type")
    return value


def _kind_name(kind) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "an array",
             dict: "an object"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def check_model(body: dict, config: ServerConfig) -> None:
    model = expect(body, "model", str, required=True)
    if model != config.model_name:
        raise APIError(404, f"The model '{model}' does not exist on this server; it serves '{config.model_name}'.",
                       "model", "model_not_found")


def sampling_from(body: dict) -> SamplingParams:
    """OpenAI's sampling fields. Without `temperature` (or with 0) the answer is greedy, as the demo is evaluated."""
    temperature = expect(body, "temperature", (int, float))
    top_p = expect(body, "top_p", (int, float))
    seed = expect(body, "seed", int)
    if temperature is not None and not 0 <= temperature <= 2:
        raise APIError(400, f"'temperature' must be between 0 and 2, got {temperature}.", "temperature",
                       "invalid_value")
    if top_p is not None and not 0 < top_p <= 1:
        raise APIError(400, f"'top_p' must be in (0, 1], got {top_p}.", "top_p", "invalid_value")
    return SamplingParams(temperature=float(temperature) if temperature else None,
                          top_p=float(top_p) if top_p is not None else None, seed=seed)


def max_tokens_from(body: dict, config: ServerConfig) -> int | None:
    value = expect(body, "max_completion_tokens", int)
    value = expect(body, "max_tokens", int) if value is None else value
    if value is not None and not 1 <= value <= config.max_tokens:
        raise APIError(400, f"'max_tokens' must be between 1 and {config.max_tokens} (answer steps of 0.2 s, one "
                       f"text token each), got {value}.", "max_tokens", "invalid_value")
    return value


def parse_chat_request(body: dict, config: ServerConfig) -> tuple[ChatRequest, ChatOptions]:
    check_model(body, config)
    messages = expect(body, "messages", list, required=True)
    if not messages:
        raise APIError(400, "'messages' must hold at least one message.", "messages", "empty_array")
    n = expect(body, "n", int, default=1)
    if n != 1:
        raise APIError(400, f"'n' must be 1 (one answer per request), got {n}.", "n", "invalid_value")
    for unsupported in ("tools", "functions", "response_format", "logprobs"):
        if body.get(unsupported):
            raise APIError(400, f"'{unsupported}' is not supported by this model's server.", unsupported,
                           "unsupported_parameter")
    modalities = expect(body, "modalities", list, default=["text"])
    if not modalities or any(m not in ("text", "audio") for m in modalities) or "text" not in modalities:
        raise APIError(400, f"'modalities' must be [\"text\"] or [\"text\", \"audio\"], got {modalities}.",
                       "modalities", "invalid_value")
    wants_audio = "audio" in modalities
    audio = expect(body, "audio", dict)
    voice = fmt = None
    if wants_audio:
        if audio is None:
            raise APIError(400, "'audio' is required when 'modalities' includes \"audio\": "
                           "{\"voice\": \"alloy\", \"format\": \"wav\"}.", "audio", "missing_required_parameter")
        voice = expect(audio, "voice", str, required=True)
        fmt = expect(audio, "format", str, required=True)
        if voice not in VOICES:
            raise APIError(400, f"Unknown voice {voice!r}: expected one of {list(VOICES)} (all speak with the "
                           "model's voice).", "audio.voice", "invalid_value")
        if fmt not in OUTPUT_FORMATS:
            raise APIError(400, f"Unsupported audio format {fmt!r}: expected one of {list(OUTPUT_FORMATS)}.",
                           "audio.format", "invalid_value")
    stream = expect(body, "stream", bool, default=False)
    stream_options = expect(body, "stream_options", dict, default={})
    conversation = [_message(i, message, config) for i, message in enumerate(messages)]
    if conversation[-1]["role"] != "user":
        raise APIError(400, "The last message must be the user's (the model answers it), got "
                       f"{conversation[-1]['role']!r}.", f"messages[{len(messages) - 1}].role", "invalid_value")
    request = ChatRequest(conversation, mode="audio" if wants_audio else "text", sampling=sampling_from(body),
                          max_tokens=max_tokens_from(body, config))
    options = ChatOptions(stream, fmt, voice, bool(stream_options.get("include_usage")))
    return request, options


def _message(index: int, message: Any, config: ServerConfig) -> dict:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise APIError(400, f"{where} must be an object with 'role' and 'content'.", where, "invalid_type")
    role = message.get("role")
    if role not in ROLES:
        raise APIError(400, f"{where}.role must be one of {list(ROLES)}, got {role!r}.", f"{where}.role",
                       "invalid_value")
    content = message.get("content")
    if role == "assistant" and content is None and isinstance(message.get("audio"), dict):
        raise APIError(400, f"{where}: earlier spoken answers are referenced by id, which this server does not "
                       "keep; send their transcript as 'content' instead.", f"{where}.content", "invalid_value")
    if isinstance(content, str):
        _check_text(content, f"{where}.content")
        return {"role": "system" if role == "developer" else role, "content": content}
    if not isinstance(content, list) or not content:
        raise APIError(400, f"{where}.content must be a string or a non-empty array of content parts.",
                       f"{where}.content", "invalid_type")
    parts = [_part(f"{where}.content[{j}]", part, role, config) for j, part in enumerate(content)]
    if role != "user" and any(p["type"] == "audio" for p in parts):
        raise APIError(400, f"{where}: only user messages may hold audio.", f"{where}.content", "invalid_value")
    if role in ("system", "developer", "assistant"):  # text only: one string, as the template renders it
        return {"role": "system" if role == "developer" else role, "content": "".join(p["text"] for p in parts)}
    return {"role": role, "content": parts}


def _part(where: str, part: Any, role: str, config: ServerConfig) -> dict:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise APIError(400, f"{where}.text must be a string.", f"{where}.text", "invalid_type")
        _check_text(text, f"{where}.text")
        return {"type": "text", "text": text}
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict):
            raise APIError(400, f"{where}.input_audio must be an object {{\"data\": base64, \"format\": \"wav\"}}.",
                           f"{where}.input_audio", "invalid_type")
        try:
            raw = decode_base64(audio.get("data"), f"{where}.input_audio.data")
            wave, rate = read_audio(raw, audio.get("format"), config.max_audio_seconds)
        except AudioError as error:
            raise APIError(400, str(error), f"{where}.input_audio", "invalid_audio") from None
        return {"type": "audio", "audio": wave, "sampling_rate": rate}
    raise APIError(400, f"{where}.type must be 'text' or 'input_audio', got {kind!r}.", f"{where}.type",
                   "invalid_value")


def _check_text(text: str, where: str) -> None:
    if len(text) > MAX_TEXT_CHARS:
        raise APIError(400, f"{where} is {len(text)} characters long; at most {MAX_TEXT_CHARS} are taken.", where,
                       "string_above_max_length")


def task_conversation(task: str, content: list[dict] | str) -> list[dict]:
    """A one-turn conversation under a training task's system prompt (transcription: "asr", speech: "t2s")."""
    return [{"role": "system", "content": SYSTEM_PROMPTS[task]}, {"role": "user", "content": content}]


__all__ = ["MAX_TEXT_CHARS", "VOICES", "APIError", "ChatOptions", "ServerConfig", "check_model", "expect",
           "max_tokens_from", "new_id", "parse_chat_request", "sampling_from", "task_conversation"]
