"""The server on Ray Serve: two replicas of the tiny checkpoint behind Ray's HTTP proxy, driven with the openai SDK."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from serving.ray_serve import REPLICA_HEADER, ServeArgs, app_builder  # noqa: E402
from serving.server import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "tiny-random-omnidrca"
NAME = "omnidrca-tiny"
APP = "omnidrca"
KEY = "ray-test-key"


@pytest.fixture(scope="module")
def url():
    port = free_port()
    started = time.monotonic()
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024, log_to_driver=False,
             configure_logging=False, namespace="omnidrca-test")
    try:
        ray_up = time.monotonic()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        # Two replicas of one CPU each (the default: one torch thread per engine) fill num_cpus=2.
        serve.run(app_builder({"model": str(TINY), "served_model_name": NAME, "api_key": KEY, "num_replicas": "2",
                               "max_batch": "4", "max_queue": "8", "max_tokens": "8"}),
                  name=APP, route_prefix="/", blocking=False)
        wait_running(APP, 120)
        print(f"\nray.init {ray_up - started:.1f} s, then Serve with 2 replicas {time.monotonic() - ray_up:.1f} s")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def wait_running(app: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = serve.status().applications.get(app)
        if status is not None and status.status == "RUNNING":
            return
        if status is not None and status.status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise RuntimeError(f"{app} failed: {status.message} {status.deployments}")
        time.sleep(0.5)
    raise TimeoutError(f"{app} did not start in {timeout} s: {serve.status()}")


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=60)


def ask(client, text: str = "Hello", **kwargs):
    return client.chat.completions.with_raw_response.create(
        model=NAME, messages=[{"role": "user", "content": text}], max_tokens=4, **kwargs)


def test_models_list_through_the_proxy(client, url):
    assert [m.id for m in client.models.list().data] == [NAME]
    with pytest.raises(openai.AuthenticationError):  # each replica checks the key
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()


def test_chat_completion_text_in_text_out(client):
    raw = ask(client)
    completion = raw.parse()
    assert completion.model == NAME
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert isinstance(completion.choices[0].message.content, str)
    assert completion.usage.completion_tokens >= 1
    assert raw.headers[REPLICA_HEADER]


def test_streamed_chat_completion(client):
    chunks = list(client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Hi"}],
                                                 max_tokens=4, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    spoken = list(client.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "Hi"}],
                                                 max_tokens=4, stream=True, modalities=["text", "audio"],
                                                 audio={"voice": "alloy", "format": "pcm16"}))
    audio = [c.choices[0].delta.audio for c in spoken if c.choices and getattr(c.choices[0].delta, "audio", None)]
    # pcm16 chunks came through the proxy as SSE (a typed object in newer SDKs, a plain dict in older ones)
    assert any(part.get("data") if isinstance(part, dict) else getattr(part, "data", None) for part in audio)


def test_transcription_and_speech(client):
    wave = (0.1 * np.sin(2 * np.pi * 220 * np.arange(16000) / 16000)).astype(np.float32)
    upload = io.BytesIO()
    sf.write(upload, wave, 16000, format="WAV")
    transcript = client.audio.transcriptions.create(model=NAME, file=("tone.wav", upload.getvalue(), "audio/wav"))
    assert isinstance(transcript.text, str)
    speech = client.audio.speech.create(model=NAME, voice="alloy", input="Hello there.", response_format="wav")
    spoken, rate = sf.read(io.BytesIO(speech.content), dtype="float32")
    assert rate > 0 and spoken.ndim == 1


def test_concurrent_requests_are_spread_over_both_replicas(client, url):
    def one(i):
        raw = ask(client, f"Question {i}")
        return raw.headers[REPLICA_HEADER], raw.parse().choices[0].finish_reason

    replicas = set()
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):  # Ray routes by queue length: a concurrent burst reaches both (almost always at once)
            answers = list(pool.map(one, range(8)))
            assert all(reason in ("stop", "length") for _, reason in answers)
            replicas |= {replica for replica, _ in answers}
            if len(replicas) == 2:
                break
    assert len(replicas) == 2, replicas
    # Each replica's own engine ran (its lifespan started it): /health, answered by either, counts its steps.
    seen = {}
    for _ in range(40):
        response = httpx.get(f"{url}/health", timeout=10)
        assert response.status_code == 200 and response.json()["status"] == "ok"
        seen[response.headers[REPLICA_HEADER]] = response.json()
        if len(seen) == 2:
            break
    assert set(seen) <= replicas
    assert all(health["steps"] > 0 and health["model"] == NAME for health in seen.values())
    stats = serve.get_app_handle(APP).engine_stats.remote().result(timeout_s=30)  # a handle reaches a replica too
    assert stats["replica"] in replicas and stats["steps"] > 0


def test_builder_arguments():
    assert ServeArgs(model="m").scaling() == {"num_replicas": 1}
    auto = ServeArgs(model="m", min_replicas="1", max_replicas="4", max_batch="8").scaling()
    assert auto == {"autoscaling_config": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8}}
    with pytest.raises(ValueError):
        ServeArgs(model="m", max_bacth=4)  # a typo is refused, not ignored
    with pytest.raises(ValueError):
        ServeArgs(model="m", min_replicas=3, max_replicas=2).scaling()
