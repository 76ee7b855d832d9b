"""The Space end to end through gradio_client: `python space/app.py` on 127.0.0.1 and a free port, shared by the
module, asked as a visitor asks (uploads, the page's /answer endpoint), bad inputs, and 8 concurrent visitors."""

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "space"))

from omnidrca_space.testing import ask, format_load, run_load, running_app

# The app as started with no --model serves the default model, checkpoints/omnidrca-smollm2.
QUESTION = ROOT / "checkpoints" / "omnidrca-smollm2" / "examples" / "capital_of_france.wav"
ANSWER = "the capital of france is paris"


@pytest.fixture(scope="module")
def app():
    with running_app() as (url, lines):
        yield url, lines


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app[0], verbose=False)


def test_app_starts_and_prints_its_local_url(app):
    url, lines = app
    assert url.startswith("http://127.0.0.1:") and any(f"Running on local URL:  {url}" in line for line in lines)


def test_the_only_public_endpoint_is_answer(client):
    # The upload check and Clear are page-only events: /answer checks inputs itself.
    api = client.view_api(print_info=False, return_format="dict")
    assert list(api["named_endpoints"]) == ["/answer"] and not api["unnamed_endpoints"]


def test_a_spoken_question_gets_text_and_an_audio_file(client):
    result = ask(client, str(QUESTION), mode="Text and speech")
    assert result["answer"] == ANSWER
    wave, rate = sf.read(result["wav"])
    assert rate == 16000 and len(wave) / rate > 0.5 and np.sqrt(np.mean(wave**2)) > 0.01
    assert "first audio after" in result["status"] and result["status"].startswith("omnidrca-smollm2: answered")

    result = ask(client, str(QUESTION), mode="Text")
    assert result["answer"] == ANSWER and result["wav"] is None


def test_bad_inputs_get_a_friendly_message_and_the_app_keeps_serving(client, tmp_path):
    (tmp_path / "notes.txt").write_text("this is not audio")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(tmp_path / "silent.wav", np.zeros(2 * 16000, np.float32), 16000)
    sf.write(tmp_path / "long.wav", 0.1 * np.sin(np.arange(16000 * 35) / 5).astype(np.float32), 16000)
    cases = [(tmp_path / "notes.txt", "could not read"), (tmp_path / "empty.wav", "recording is empty"),
             (tmp_path / "silent.wav", "only heard silence"), (tmp_path / "long.wav", "at most 30 s"),
             (None, "Record or upload a question")]
    for audio, message in cases:
        result = ask(client, str(audio) if audio else None)
        assert result["answer"].startswith("ℹ️") and message in result["answer"], (audio, result["answer"])
        assert result["wav"] is None
    assert ask(client, str(QUESTION), mode="Text")["answer"] == ANSWER  # still serving


def test_concurrent_visitors_are_queued_and_all_answered(app):
    # 8 visitors x 5 questions in text mode, then one spoken answer each, all at once on a 2-core machine.
    text = run_load(app[0], str(QUESTION), clients=8, requests=5, mode="Text", expect=ANSWER)
    speech = run_load(app[0], str(QUESTION), clients=8, requests=1, mode="Text and speech", expect=ANSWER)
    print("\n" + format_load(text) + "\n" + format_load(speech))
    for report in (text, speech):
        assert report["failures"] == [] and report["completed"] == report["requests"]
        assert report["p95_s"] < 60
