"""The OpenAI-compatible server, driven over HTTP on a loopback port with the real `openai` SDK: chat with audio in
and out (whole and streamed), transcriptions, speech, models; the API key; 16 concurrent clients; a client that
goes away frees its row. Expected answers come from `model.generate` on the same question, run here."""

import base64
import io
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf

from modeling_omnidrca.audio_utils import resample
from modeling_omnidrca.processing_omnidrca import SYSTEM_PROMPTS
from serving.server import ServerThread, build_app, load_model

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "checkpoints" / "omnidrca-demo"
TINY = REPO / "tests" / "fixtures" / "tiny-random-omnidrca"
NAME = "omnidrca-demo"


@pytest.fixture(scope="module")
def server():
    app = build_app(str(DEMO))
    with ServerThread(app) as url:
        yield app, url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server[1] + "/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def reference():
    return load_model(str(DEMO), "cpu")


def wav_b64(name: str) -> str:
    return base64.b64encode((DEMO / "examples" / f"{name}.wav").read_bytes()).decode()


def audio_message(name: str, text: str | None = None) -> dict:
    parts = [{"type": "input_audio", "input_audio": {"data": wav_b64(name), "format": "wav"}}]
    return {"role": "user", "content": parts + ([{"type": "text", "text": text}] if text else [])}


def solo(reference, task: str, content, mode: str = "text"):
    """(text, waveform) that `generate` answers alone under `task`'s system prompt."""
    model, processor = reference
    conversation = [{"role": "system", "content": SYSTEM_PROMPTS[task]}, {"role": "user", "content": content}]
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    out = model.generate(**inputs, generation_mode=mode, max_new_tokens=256)
    text = processor.tokenizer.decode(out.sequences[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return text, (None if mode == "text" else out.waveform[0, : int(out.waveform_lengths[0])].numpy())


def field(obj, name: str):
    return obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)


def clip(name: str) -> list[dict]:
    wave, rate = sf.read(DEMO / "examples" / f"{name}.wav", dtype="float32")
    return [{"type": "audio", "audio": wave, "sampling_rate": rate}]


def test_models_and_health(client, server):
    assert [m.id for m in client.models.list().data] == [NAME]
    assert client.models.retrieve(NAME).id == NAME
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.models.retrieve("gpt-4o")
    health = httpx.get(server[1] + "/health").json()
    assert health["status"] == "ok" and health["model"] == NAME and health["live_rows"] == 0


def test_chat_answers_a_spoken_question_in_text_and_in_speech(client, reference):
    want_text, want_wave = solo(reference, "s2s", clip("seven_plus_twelve"), "audio")
    messages = [{"role": "system", "content": SYSTEM_PROMPTS["s2s"]}, audio_message("seven_plus_twelve")]
    text_only = client.chat.completions.create(model=NAME, messages=messages)
    assert text_only.choices[0].message.content == want_text
    assert text_only.choices[0].message.audio is None and text_only.choices[0].finish_reason == "stop"
    assert text_only.usage.prompt_tokens_details.audio_tokens > 0 and text_only.usage.completion_tokens > 0

    spoken = client.chat.completions.create(model=NAME, messages=messages, modalities=["text", "audio"],
                                            audio={"voice": "alloy", "format": "wav"})
    message = spoken.choices[0].message
    assert message.content == message.audio.transcript == want_text
    wave, rate = sf.read(io.BytesIO(base64.b64decode(message.audio.data)), dtype="float32")
    assert rate == 16000 and wave.shape == want_wave.shape
    np.testing.assert_allclose(wave, np.clip(want_wave, -1, 1), atol=2 / 32768 + 2e-4)  # 16-bit wav


def test_streamed_chat_sends_text_and_pcm16_audio_as_made(client, reference):
    want_text, want_wave = solo(reference, "s2s", clip("capital_of_france"), "audio")
    stream = client.chat.completions.create(
        model=NAME, messages=[audio_message("capital_of_france")], modalities=["text", "audio"],
        audio={"voice": "coral", "format": "pcm16"}, stream=True, stream_options={"include_usage": True})
    text, transcript, pcm, audio_chunks, finish, usage = "", "", b"", 0, None, None
    for chunk in stream:
        if not chunk.choices:
            usage = chunk.usage
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        audio = getattr(delta, "audio", None)
        if audio is not None:  # a typed object in newer SDKs, a plain dict in older ones
            transcript += field(audio, "transcript") or ""
            if field(audio, "data"):
                pcm, audio_chunks = pcm + base64.b64decode(field(audio, "data")), audio_chunks + 1
        finish = chunk.choices[0].finish_reason or finish
    assert text == transcript == want_text and finish == "stop"
    assert audio_chunks > 1  # the answer arrived in pieces, not at the end
    # pcm16 at 24 kHz: the chunks join into the whole answer resampled at once (no seams at chunk boundaries)
    want_pcm = np.clip(resample(want_wave, 16000, 24000), -1, 1) * 32767
    np.testing.assert_allclose(np.frombuffer(pcm, "<i2"), want_pcm, atol=10)
    assert usage.completion_tokens_details.audio_tokens * 640 == len(want_wave)


def test_history_text_parts_and_developer_messages_are_taken(client):
    messages = [{"role": "developer", "content": SYSTEM_PROMPTS["s2s"]}, audio_message("opposite_of_hot"),
                {"role": "assistant", "content": "the opposite of hot is cold"},
                audio_message("seven_plus_twelve", text="and this one?")]
    reply = client.chat.completions.create(model=NAME, messages=messages, max_tokens=40)
    single = client.chat.completions.create(model=NAME, messages=[audio_message("seven_plus_twelve")])
    assert reply.choices[0].message.content and reply.usage.prompt_tokens > single.usage.prompt_tokens + 10


def test_transcription_and_speech(client, reference):
    with open(DEMO / "examples" / "capital_of_france.wav", "rb") as f:
        transcript = client.audio.transcriptions.create(model=NAME, file=f)
    assert transcript.text == solo(reference, "asr", clip("capital_of_france"))[0]
    with open(DEMO / "examples" / "capital_of_france.wav", "rb") as f:
        plain = client.audio.transcriptions.create(model=NAME, file=f, response_format="text")
    assert plain.strip() == transcript.text

    sentence = "the capital of france is paris"
    _, want = solo(reference, "t2s", sentence, "audio")
    for fmt, decode in (("wav", True), ("flac", True), ("mp3", True), ("pcm", False)):
        speech = client.audio.speech.create(model=NAME, voice="alloy", input=sentence, response_format=fmt)
        if decode:
            wave, rate = sf.read(io.BytesIO(speech.content), dtype="float32")
            assert rate == 16000 and abs(len(wave) - len(want)) <= (2000 if fmt == "mp3" else 0)
        else:
            assert len(speech.content) // 2 == pytest.approx(len(want) * 1.5, abs=2)


def test_seeded_sampling_repeats(client):
    kwargs = dict(model=NAME, messages=[audio_message("opposite_of_hot")], temperature=1.2, top_p=0.95, seed=7,
                  max_tokens=12)
    first, second = (client.chat.completions.create(**kwargs).choices[0].message.content for _ in range(2))
    assert first == second and first


def test_sixteen_concurrent_clients_all_get_their_answers(client, server, reference):
    names = ("seven_plus_twelve", "capital_of_france", "opposite_of_hot")
    want = {name: solo(reference, "s2s", clip(name))[0] for name in names}
    results, errors = {}, []

    def user(i: int) -> None:
        own = openai.OpenAI(base_url=server[1] + "/v1", api_key="unused", max_retries=0)
        try:
            for j in range(2):
                name = names[(i + j) % 3]
                extra = {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}} if i % 2 else {}
                reply = own.chat.completions.create(model=NAME, messages=[audio_message(name)], **extra)
                results[(i, j)] = (reply.choices[0].message.content, want[name], reply.choices[0].message.audio)
        except Exception as error:  # collected: the test reports every failure, not the first
            errors.append(repr(error))

    threads = [threading.Thread(target=user, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert errors == [] and len(results) == 32
    assert all(got == expected for got, expected, _ in results.values())
    assert all((audio is not None) == bool(i % 2) for (i, _), (_, _, audio) in results.items())
    assert server[0].state.engine.largest_batch > 1


def test_the_api_key_is_required_when_set():
    app = build_app(str(TINY), api_key="secret", max_tokens=8)
    with ServerThread(app) as url:
        with pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
        missing = httpx.get(url + "/v1/models")
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "missing_api_key"
        assert httpx.get(url + "/health").status_code == 200  # the load balancer's probe stays open
        assert openai.OpenAI(base_url=url + "/v1", api_key="secret").models.list().data[0].id == "tiny-random-omnidrca"


def wait_until_idle(engine, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while engine.live_rows and time.monotonic() < deadline:
        time.sleep(0.02)


def test_a_client_that_goes_away_frees_its_row():
    # random weights: the answer only ends at max_tokens (the tiny backbone has 512 positions; RoPE runs past them)
    app = build_app(str(TINY), max_tokens=4000, max_context=100_000)
    engine = app.state.engine
    body = {"model": "tiny-random-omnidrca", "messages": [audio_message("seven_plus_twelve")],
            "modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "pcm16"}, "stream": True}
    with ServerThread(app) as url:
        with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as response:
            assert response.status_code == 200
            next(response.iter_lines())
        wait_until_idle(engine)
        assert engine.live_rows == 0 and engine.steps < 3000
        steps = engine.steps
        with pytest.raises(httpx.ReadTimeout):  # a non-streaming client that gives up
            httpx.post(url + "/v1/chat/completions", json={**body, "stream": False, "audio": None,
                                                             "modalities": ["text"]}, timeout=1.0)
        wait_until_idle(engine)
        assert engine.live_rows == 0 and engine.steps - steps < 3000


def test_the_command_line_server(tmp_path):
    import subprocess
    import sys

    from serving.server import free_port

    bad = subprocess.run([sys.executable, "-m", "serving", "--model", str(tmp_path / "missing")], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "serving", "--model", str(TINY), "--port", str(port),
                               "--served-model-name", "tiny", "--api-key", "k", "--max-tokens", "8"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = ""
        while "serving '" not in banner:  # after the weight-loading progress bar
            banner = server.stdout.readline()
            assert banner, "the server exited before serving"
        assert f"serving 'tiny' on http://127.0.0.1:{port}/v1" in banner and "API key required" in banner
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=5)
        deadline = time.monotonic() + 60
        while True:  # uvicorn binds the port just after the banner
            try:
                assert client.models.list().data[0].id == "tiny"
                break
            except openai.APIConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        reply = client.chat.completions.create(model="tiny", messages=[audio_message("seven_plus_twelve")])
        assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.completion_tokens <= 8
    finally:
        server.terminate()
        server.wait(30)
