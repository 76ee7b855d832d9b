"""`WS /v1/realtime` on a loopback server, driven with the `websockets` client: the session, the audio buffer, streamed
answers (audio and text), every error path (each keeps the connection working), cancel, a client that goes away,
multi-turn history, the API key, and the demo model answering a spoken question. The tiny random checkpoint answers
noise, so those tests check the protocol and lengths; the demo's answer is checked against `model.generate`."""

import base64
import json
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from modeling_omnidrca.audio_utils import resample
from modeling_omnidrca.processing_omnidrca import SYSTEM_PROMPTS
from serving.engine import EngineBusy, Failed, RequestHandle
from serving.server import ServerThread, build_app

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "checkpoints" / "omnidrca-demo"
TINY = REPO / "tests" / "fixtures" / "tiny-random-omnidrca"
RATE = 24_000
MAX_TOKENS = 1000  # a whole tiny answer takes seconds: long enough to cancel it or leave in the middle


@pytest.fixture(scope="module")
def server():
    app = build_app(str(TINY), max_tokens=MAX_TOKENS, max_audio_seconds=5, max_context=100_000)
    with ServerThread(app) as url:
        yield app, url


@pytest.fixture
def recorded(server, monkeypatch):
    """The handles the engine is given, to look at what the websocket asked for."""
    engine, handles = server[0].state.engine, []
    submit = engine.submit

    def recording(request, loop=None):
        handles.append(submit(request, loop))
        return handles[-1]

    monkeypatch.setattr(engine, "submit", recording)
    return handles


@contextmanager
def session(url: str, **kwargs):
    with connect(url.replace("http://", "ws://") + "/v1/realtime", open_timeout=30, **kwargs) as ws:
        created = recv(ws)
        assert created["type"] == "session.created", created
        yield ws


def send(ws, kind: str, **fields) -> None:
    ws.send(json.dumps({"type": kind, **fields}))


def recv(ws) -> dict:
    return json.loads(ws.recv(timeout=60))


def until(ws, kind: str) -> list[dict]:
    events = [recv(ws)]
    while events[-1]["type"] != kind:
        events.append(recv(ws))
    return events


def pcm(seconds: float) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * 220 * t) * 8000).astype("<i2").tobytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def ask(ws, seconds: float = 0.5, **response) -> list[dict]:
    """Speak a clip, commit it and ask for an answer: the events up to `response.done`."""
    send(ws, "input_audio_buffer.append", audio=b64(pcm(seconds)))
    send(ws, "input_audio_buffer.commit")
    send(ws, "response.create", **({"response": response} if response else {}))
    return until(ws, "response.done")


def of(events: list[dict], kind: str) -> list[dict]:
    return [e for e in events if e["type"] == kind]


def test_session_created_describes_the_defaults_and_updates(server):
    with session(server[1]) as ws:
        send(ws, "session.update", session={})
        updated = recv(ws)
        assert updated["type"] == "session.updated"
        s = updated["session"]
        assert s["object"] == "realtime.session" and s["model"] == TINY.name
        assert s["output_modalities"] == ["audio"] and s["instructions"] == SYSTEM_PROMPTS["s2s"]
        assert s["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": RATE}
        assert s["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": RATE}
        assert s["voice"] == "alloy" and s["temperature"] is None and s["max_output_tokens"] == "inf"
        send(ws, "session.update", session={"instructions": "Be brief.", "modalities": ["text"], "voice": "nova",
                                            "temperature": 0.7, "max_response_output_tokens": 5, "unknown": 1})
        s = recv(ws)["session"]
        assert (s["instructions"], s["output_modalities"], s["voice"]) == ("Be brief.", ["text"], "nova")
        assert (s["temperature"], s["max_output_tokens"]) == (0.7, 5)
        send(ws, "session.update", session={"output_modalities": ["text", "audio"], "max_output_tokens": "inf",
                                            "temperature": 0})
        s = recv(ws)["session"]
        assert (s["output_modalities"], s["max_output_tokens"], s["temperature"]) == (["audio"], "inf", None)


def test_a_spoken_answer_streams_in_order(server):
    with session(server[1]) as ws:
        events = ask(ws, max_output_tokens=10)
    kinds = [e["type"] for e in events]
    head = ["input_audio_buffer.committed", "conversation.item.created", "response.created",
            "response.output_item.added", "response.content_part.added"]
    tail = ["response.output_audio.done", "response.output_audio_transcript.done", "response.content_part.done",
            "response.output_item.done", "response.done"]
    assert kinds[:5] == head and kinds[-5:] == tail, kinds
    assert set(kinds[5:-5]) == {"response.output_audio.delta", "response.output_audio_transcript.delta"}
    assert len({e["event_id"] for e in events}) == len(events)
    committed, created = events[0], events[1]
    assert created["item"]["id"] == committed["item_id"] and created["item"]["role"] == "user"
    assert created["item"]["content"] == [{"type": "input_audio", "transcript": None}]
    done = events[-1]["response"]
    assert {e["response_id"] for e in events[3:-1]} == {done["id"]} == {events[2]["response"]["id"]}
    transcript = "".join(e["delta"] for e in of(events, "response.output_audio_transcript.delta"))
    assert of(events, "response.output_audio_transcript.done")[0]["transcript"] == transcript
    assert done["output"][0]["content"] == [{"type": "output_audio", "transcript": transcript}]
    audio = [base64.b64decode(e["delta"]) for e in of(events, "response.output_audio.delta")]
    assert audio and all(len(chunk) % 2 == 0 for chunk in audio)
    # Ten 0.2 s steps at most: about 2 s of 24 kHz pcm16.
    assert 0 < sum(len(chunk) for chunk in audio) / 2 / RATE <= 2.2
    assert done["status"] in ("completed", "incomplete")
    if done["status"] == "incomplete":
        assert done["status_details"]["reason"] == "max_output_tokens"
    usage = done["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] and 0 < usage["output_tokens"] <= 10


def test_text_mode_answers_text_only(server):
    with session(server[1]) as ws:
        send(ws, "session.update", session={"output_modalities": ["text"], "max_output_tokens": 3})
        assert recv(ws)["type"] == "session.updated"
        events = ask(ws)
    kinds = {e["type"] for e in events}
    assert "response.output_text.delta" in kinds and not any("audio." in k for k in kinds), kinds
    text = "".join(e["delta"] for e in of(events, "response.output_text.delta"))
    assert of(events, "response.output_text.done")[0]["text"] == text
    done = events[-1]["response"]
    assert done["output"][0]["content"] == [{"type": "output_text", "text": text}]
    assert done["usage"]["output_tokens"] <= 3


BAD_EVENTS = [
    ("not json", "invalid_json"),
    ("[1, 2]", "invalid_json"),
    (json.dumps({"event_id": "e1", "audio": "AAAA"}), "missing_required_parameter"),
    (json.dumps({"type": "session.explode", "event_id": "e1"}), "invalid_value"),
    (json.dumps({"type": "input_audio_buffer.commit", "event_id": "e1"}), "input_audio_buffer_commit_empty"),
    (json.dumps({"type": "response.create", "event_id": "e1"}), "no_user_input"),
    (json.dumps({"type": "response.cancel", "event_id": "e1"}), "response_cancel_not_active"),
    (json.dumps({"type": "input_audio_buffer.append", "event_id": "e1", "audio": "not base64!"}), "invalid_audio"),
    (json.dumps({"type": "input_audio_buffer.append", "event_id": "e1", "audio": b64(b"abc")}), "invalid_audio"),
    (json.dumps({"type": "input_audio_buffer.append", "event_id": "e1", "audio": b64(pcm(6))}),
     "input_audio_buffer_too_long"),
    (json.dumps({"type": "session.update", "event_id": "e1", "session": "audio"}), "invalid_type"),
    (json.dumps({"type": "conversation.item.create", "event_id": "e1",
                 "item": {"type": "message", "role": "assistant", "content": []}}), "invalid_value"),
    (json.dumps({"type": "conversation.item.create", "event_id": "e1",
                 "item": {"type": "message", "role": "user", "content": [{"type": "input_text"}]}}), "invalid_value"),
] + [(json.dumps({"type": "session.update", "event_id": "e1", "session": {"instructions": "changed", **bad}}), code)
     for bad, code in [({"voice": "robot"}, "invalid_value"), ({"temperature": 5}, "invalid_value"),
                       ({"temperature": "hot"}, "invalid_type"), ({"max_output_tokens": 0}, "invalid_value"),
                       ({"max_output_tokens": MAX_TOKENS + 1}, "invalid_value"),
                       ({"max_response_output_tokens": "lots"}, "invalid_value"),
                       ({"output_modalities": ["video"]}, "invalid_value"), ({"modalities": "text"}, "invalid_value"),
                       ({"turn_detection": {"type": "server_vad"}}, "unsupported_value"),
                       ({"audio": {"input": {"format": {"type": "audio/pcmu"}}}}, "unsupported_value")]]


def test_every_error_is_an_error_event_and_the_connection_keeps_working(server):
    with session(server[1]) as ws:
        for frame, code in BAD_EVENTS:
            ws.send(frame)
            event = recv(ws)
            assert event["type"] == "error" and event["error"]["code"] == code, (frame[:80], event)
            assert event["error"]["type"] == "invalid_request_error" and event["error"]["message"]
            assert event["error"]["event_id"] == ("e1" if "e1" in frame else None)
            assert "Traceback" not in event["error"]["message"]
            send(ws, "input_audio_buffer.clear")  # the next event answers the next message: nothing else came
            assert recv(ws)["type"] == "input_audio_buffer.cleared"
        ws.send(b"binary")
        assert recv(ws)["error"]["code"] == "invalid_json"
        send(ws, "input_audio_buffer.append", audio=b64(pcm(0.05)))
        send(ws, "input_audio_buffer.commit")  # 50 ms: shorter than the 100 ms a commit needs
        assert recv(ws)["error"]["code"] == "input_audio_buffer_commit_empty"
        send(ws, "session.update", session={})
        s = recv(ws)["session"]  # no bad update changed anything, not even its valid fields
        assert (s["instructions"], s["voice"], s["temperature"]) == (SYSTEM_PROMPTS["s2s"], "alloy", None)
        events = ask(ws, max_output_tokens=2)
        assert events[-1]["response"]["status"] in ("completed", "incomplete")


def test_one_response_at_a_time_and_cancel_stops_it(server, recorded):
    with session(server[1]) as ws:
        send(ws, "input_audio_buffer.append", audio=b64(pcm(0.5)))
        send(ws, "input_audio_buffer.commit")
        send(ws, "response.create")
        send(ws, "input_audio_buffer.append", audio=b64(pcm(0.5)))
        send(ws, "input_audio_buffer.commit")  # a turn may be committed while an answer streams
        send(ws, "response.create", event_id="again")
        send(ws, "response.cancel")
        events = until(ws, "response.done")
        error = of(events, "error")[0]["error"]
        assert (error["code"], error["event_id"]) == ("conversation_already_has_active_response", "again")
        done = events[-1]["response"]
        assert done["status"] == "cancelled" and done["status_details"]["reason"] == "client_cancelled"
        assert recorded[0].cancelled.is_set()
        send(ws, "response.cancel")
        assert recv(ws)["error"]["code"] == "response_cancel_not_active"
        follow = ask(ws, max_output_tokens=2)  # the connection answers again
        assert follow[-1]["response"]["status"] in ("completed", "incomplete")
    # The cancelled answer's words so far sit between the turns they answered and the turn committed meanwhile.
    said = done["output"][0]["content"][0]["transcript"]
    roles = [turn["role"] for turn in recorded[1].request.conversation]
    assert roles == ["system", "user"] + (["assistant"] if said else []) + ["user", "user"]
    wait_for_no_rows(server[1])


def test_a_busy_engine_answers_an_error_and_the_turn_can_be_asked_again(server, monkeypatch):
    engine = server[0].state.engine
    with session(server[1]) as ws:
        send(ws, "input_audio_buffer.append", audio=b64(pcm(0.5)))
        send(ws, "input_audio_buffer.commit")
        until(ws, "conversation.item.created")
        with monkeypatch.context() as patch:
            patch.setattr(engine, "submit", lambda request, loop=None: (_ for _ in ()).throw(EngineBusy("full")))
            send(ws, "response.create", event_id="busy")
            error = recv(ws)["error"]
        assert (error["type"], error["code"], error["event_id"]) == ("rate_limit_error", "rate_limit_exceeded", "busy")
        send(ws, "response.create", response={"max_output_tokens": 2})  # the committed turn still awaits its answer
        assert until(ws, "response.done")[-1]["response"]["status"] in ("completed", "incomplete")


def test_an_answer_the_engine_fails_ends_failed(server, monkeypatch):
    def failing(request, loop=None):
        handle = RequestHandle(request, loop)
        handle.emit(Failed(408, "The request took too long.", "timeout"))
        return handle

    with session(server[1]) as ws:
        monkeypatch.setattr(server[0].state.engine, "submit", failing)
        events = ask(ws)
        monkeypatch.undo()
        error = of(events, "error")[0]["error"]
        assert (error["code"], error["message"]) == ("timeout", "The request took too long.")
        done = events[-1]["response"]
        assert done["status"] == "failed" and done["status_details"]["error"]["code"] == "timeout"
        send(ws, "input_audio_buffer.append", audio=b64(pcm(0.5)))
        send(ws, "input_audio_buffer.commit")
        send(ws, "response.create", response={"max_output_tokens": 2})
        assert until(ws, "response.done")[-1]["response"]["status"] in ("completed", "incomplete")


def wait_for_no_rows(url: str) -> None:
    deadline = time.monotonic() + 20
    while (rows := httpx.get(url + "/health").json()["live_rows"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rows == 0


def test_a_client_that_leaves_mid_answer_frees_its_row(server, recorded):
    engine = server[0].state.engine
    with session(server[1]) as ws:
        steps = engine.steps
        send(ws, "input_audio_buffer.append", audio=b64(pcm(0.5)))
        send(ws, "input_audio_buffer.commit")
        send(ws, "response.create")
        until(ws, "response.output_audio.delta")
    wait_for_no_rows(server[1])
    assert recorded[0].cancelled.is_set() and engine.steps - steps < MAX_TOKENS  # it left before its end
    with session(server[1]) as ws:  # the server is fine
        assert ask(ws, max_output_tokens=2)[-1]["type"] == "response.done"


def test_two_turns_share_one_conversation(server, recorded):
    with session(server[1]) as ws:
        send(ws, "session.update", session={"instructions": "Be brief.", "max_output_tokens": 3})
        recv(ws)
        first = ask(ws, seconds=0.4)[-1]["response"]["output"][0]["content"][0]["transcript"]
        second = ask(ws, seconds=0.6)[-1]["response"]
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "And then?"}]}
        send(ws, "conversation.item.create", item=item)
        created = recv(ws)
        assert created["type"] == "conversation.item.created" and created["item"]["content"] == item["content"]
        send(ws, "response.create", response={"output_modalities": ["text"]})
        third = until(ws, "response.done")
    assert second["status"] in ("completed", "incomplete") and of(third, "response.output_text.done")
    conversations = [handle.request.conversation for handle in recorded]
    assert [len(c) for c in conversations] == [2, 4, 6]
    system, user, answer, user2, answer2, typed = conversations[2]
    assert system == {"role": "system", "content": "Be brief."} and answer == {"role": "assistant", "content": first}
    assert [user["role"], user2["role"], answer2["role"]] == ["user", "user", "assistant"]
    assert len(user["content"][0]["audio"]) == 0.4 * RATE and user["content"][0]["sampling_rate"] == RATE
    assert len(user2["content"][0]["audio"]) == 0.6 * RATE and typed["content"] == [{"type": "text", "text": "And then?"}]
    assert [h.request.mode for h in recorded] == ["audio", "audio", "text"]
    assert conversations[1] == conversations[2][:4]


def test_the_api_key_guards_the_socket():
    app = build_app(str(TINY), api_key="secret", max_tokens=8)
    with ServerThread(app) as url:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            with pytest.raises(InvalidStatus) as refused:
                with session(url, additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 403
        with session(url, additional_headers={"Authorization": "Bearer secret"}) as ws:
            assert ask(ws, max_output_tokens=2)[-1]["type"] == "response.done"
        # Browsers cannot set headers: they send the key as a subprotocol next to "realtime", which is selected.
        with session(url, subprotocols=["realtime", "openai-insecure-api-key.secret"]) as ws:
            assert ws.subprotocol == "realtime"


def test_a_model_this_server_does_not_serve_is_refused(server):
    with connect(server[1].replace("http://", "ws://") + "/v1/realtime?model=gpt-realtime") as ws:
        assert recv(ws)["error"]["code"] == "model_not_found"


def test_the_demo_answers_a_spoken_question():
    app = build_app(str(DEMO), max_tokens=60)
    model, processor = app.state.engine.model, app.state.engine.processor
    wave, rate = sf.read(DEMO / "examples" / "seven_plus_twelve.wav", dtype="float32")
    clip = (np.clip(resample(wave, rate, RATE), -1, 1) * 32767).round().astype("<i2").tobytes()
    # What `generate` answers to the same clip, as the socket hands it to the processor (float32 at 24 kHz).
    heard = np.frombuffer(clip, dtype="<i2").astype(np.float32) / 32768
    conversation = [{"role": "system", "content": SYSTEM_PROMPTS["s2s"]},
                    {"role": "user", "content": [{"type": "audio", "audio": heard, "sampling_rate": RATE}]}]
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    out = model.generate(**inputs, generation_mode="audio", max_new_tokens=60)
    expected_seconds = int(out.waveform_lengths[0]) / model.speech_codec.config.sampling_rate
    with ServerThread(app) as url, session(url) as ws:
        step = len(clip) // 5 // 2 * 2
        for start in range(0, len(clip), step):
            send(ws, "input_audio_buffer.append", audio=b64(clip[start:start + step]))
        send(ws, "input_audio_buffer.commit")
        send(ws, "response.create")
        events = until(ws, "response.done")
    transcript = "".join(e["delta"] for e in of(events, "response.output_audio_transcript.delta"))
    assert transcript == "seven plus twelve is nineteen"
    assert of(events, "response.output_audio_transcript.done")[0]["transcript"] == transcript
    assert events[-1]["response"]["status"] == "completed"
    seconds = sum(len(base64.b64decode(e["delta"])) for e in of(events, "response.output_audio.delta")) / 2 / RATE
    assert 1.5 < expected_seconds < 3 and abs(seconds - expected_seconds) < 0.05, (seconds, expected_seconds)
