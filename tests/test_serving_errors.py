"""Every bad request gets a 4xx in OpenAI's error shape, names what was wrong, leaks no traceback, and the server
keeps serving (each case is followed by a good request)."""

import base64
import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from serving.server import ServerThread, build_app

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "fixtures" / "tiny-random-omnidrca"
NAME = "tiny-random-omnidrca"
BODY_LIMIT = 2 * 1024 * 1024


def wav(seconds: float) -> bytes:
    t = np.arange(int(seconds * 16000)) / 16000
    buffer = io.BytesIO()
    sf.write(buffer, (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), 16000, format="WAV")
    return buffer.getvalue()


GOOD_WAV = base64.b64encode(wav(1.0)).decode()


def audio_part(data: str = GOOD_WAV, fmt: str = "wav") -> dict:
    return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}


def chat(**overrides) -> dict:
    return {"model": NAME, "messages": [{"role": "user", "content": [audio_part()]}], "max_tokens": 4, **overrides}


@pytest.fixture(scope="module")
def url():
    app = build_app(str(TINY), max_tokens=16, max_audio_seconds=5, max_body_bytes=BODY_LIMIT)
    with ServerThread(app) as base:
        yield base


CHAT = "/v1/chat/completions"
CASES = {  # name: (path, request keyword arguments, status, text the message must hold, param)
    "invalid base64": (CHAT, dict(json=chat(messages=[{"role": "user", "content": [audio_part("%%%")]}])), 400,
                       "not valid base64", "messages[0].content[0].input_audio"),
    "not audio": (CHAT, dict(json=chat(messages=[{"role": "user", "content": [
        audio_part(base64.b64encode(b"hello, I am text" * 100).decode())]}])), 400, "Could not decode", None),
    "audio too long": (CHAT, dict(json=chat(messages=[{"role": "user", "content": [
        audio_part(base64.b64encode(wav(6.0)).decode())]}])), 400, "at most 5 s", None),
    "wrong content type": (CHAT, dict(content=json.dumps(chat()), headers={"content-type": "text/plain"}), 415,
                           "Expected a JSON body", None),
    "malformed JSON": (CHAT, dict(content=b"{\"model\": ", headers={"content-type": "application/json"}), 400,
                       "not valid JSON", None),
    "a JSON array": (CHAT, dict(json=[1, 2]), 400, "must be a JSON object", None),
    "missing messages": (CHAT, dict(json={"model": NAME}), 400, "Missing required parameter: 'messages'",
                         "messages"),
    "missing model": (CHAT, dict(json={"messages": []}), 400, "Missing required parameter: 'model'", "model"),
    "unknown model": (CHAT, dict(json=chat(model="gpt-4o")), 404, "does not exist", "model"),
    "bad role": (CHAT, dict(json=chat(messages=[{"role": "robot", "content": "hi"}])), 400, "role must be one of",
                 "messages[0].role"),
    "assistant last": (CHAT, dict(json=chat(messages=[{"role": "assistant", "content": "hi"}])), 400,
                       "last message must be the user's", None),
    "bad part type": (CHAT, dict(json=chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}])), 400,
                      "'text' or 'input_audio'", None),
    "audio without audio settings": (CHAT, dict(json=chat(modalities=["text", "audio"])), 400,
                                     "'audio' is required", "audio"),
    "unknown voice": (CHAT, dict(json=chat(modalities=["text", "audio"], audio={"voice": "hal", "format": "wav"})),
                      400, "Unknown voice", "audio.voice"),
    "streamed wav": (CHAT, dict(json=chat(stream=True, modalities=["text", "audio"],
                                          audio={"voice": "alloy", "format": "wav"})), 400, "pcm16", "audio.format"),
    "n of 2": (CHAT, dict(json=chat(n=2)), 400, "'n' must be 1", "n"),
    "tools": (CHAT, dict(json=chat(tools=[{"type": "function"}])), 400, "not supported", "tools"),
    "temperature too high": (CHAT, dict(json=chat(temperature=3)), 400, "between 0 and 2", "temperature"),
    "max_tokens too big": (CHAT, dict(json=chat(max_tokens=10_000)), 400, "between 1 and 16", "max_tokens"),
    "max_tokens a string": (CHAT, dict(json=chat(max_tokens="8")), 400, "must be an integer", "max_tokens"),
    "oversized body": (CHAT, dict(content=b"x" * (BODY_LIMIT + 1), headers={"content-type": "application/json"}),
                       413, "larger than this server's limit", None),
    "oversized chunked body": (CHAT, dict(content=iter([b"x" * BODY_LIMIT, b"y"]),
                                          headers={"content-type": "application/json"}), 413, "limit", None),
    "transcription without file": ("/v1/audio/transcriptions", dict(files={"model": (None, NAME)}), 400,
                                   "'file'", "file"),
    "transcription url-encoded": ("/v1/audio/transcriptions", dict(data={"model": NAME}), 415, "multipart", None),
    "transcription as JSON": ("/v1/audio/transcriptions", dict(json={"model": NAME}), 415, "multipart", None),
    "transcription not audio": ("/v1/audio/transcriptions", dict(data={"model": NAME},
                                                                 files={"file": ("a.wav", b"nope")}), 400,
                                "Could not decode", "file"),
    "transcription srt": ("/v1/audio/transcriptions", dict(data={"model": NAME, "response_format": "srt"},
                                                           files={"file": ("a.wav", wav(1.0))}), 400,
                          "'json' or 'text'", "response_format"),
    "speech without input": ("/v1/audio/speech", dict(json={"model": NAME, "voice": "alloy"}), 400,
                             "'input'", "input"),
    "speech too fast": ("/v1/audio/speech", dict(json={"model": NAME, "voice": "alloy", "input": "hi",
                                                       "speed": 2.0}), 400, "speed 1.0", "speed"),
    "speech as aac": ("/v1/audio/speech", dict(json={"model": NAME, "voice": "alloy", "input": "hi",
                                                     "response_format": "aac"}), 400, "response_format", None),
    "unknown route": ("/v1/embeddings", dict(json={}), 404, "Not Found", None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(url, name):
    path, kwargs, status, text, param = CASES[name]
    response = httpx.post(url + path, timeout=60, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and text in error["message"]
    assert error["type"] == "invalid_request_error" and "Traceback" not in response.text
    if param is not None:
        assert error["param"] == param
    good = httpx.post(url + CHAT, json=chat(), timeout=60)
    assert good.status_code == 200 and good.json()["choices"][0]["finish_reason"] in ("stop", "length")


def test_wrong_method_and_a_full_queue(url):
    response = httpx.get(url + CHAT)
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
    app = build_app(str(TINY), max_tokens=4000, max_context=100_000, max_batch=1, max_queue=1)
    with ServerThread(app) as busy:
        long = {**chat(), "max_tokens": 4000, "stream": True, "modalities": ["text", "audio"],  # random weights:
                "audio": {"voice": "alloy", "format": "pcm16"}}  # both streams must end, so it runs on
        with httpx.stream("POST", busy + CHAT, json=long, timeout=60) as running:
            lines = running.iter_lines()  # kept: a dropped iterator closes the connection, and the row with it
            next(lines)
            while not app.state.engine.live_rows:  # admitted; with max_batch=1 the next request waits in the queue
                next(lines)
            with httpx.stream("POST", busy + CHAT, json=long, timeout=60) as queued:
                assert queued.status_code == 200
                refused = httpx.post(busy + CHAT, json=chat(), timeout=60)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
