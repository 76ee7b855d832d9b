"""The serving engine: continuous batching gives each request what `generate` gives it alone; rows join a running
batch and leave when they end, hit their limit, time out or are cancelled; a full queue refuses, a bad prompt fails
only its own request."""

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from modeling_omnidrca.processing_omnidrca import SYSTEM_PROMPTS
from serving.engine import AudioDelta, ChatRequest, EngineBusy, Failed, Finished, SamplingParams, TextDelta
from serving.server import load_model

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "checkpoints" / "omnidrca-demo"
TINY = REPO / "tests" / "fixtures" / "tiny-random-omnidrca"
QUESTIONS = ("seven_plus_twelve", "capital_of_france", "opposite_of_hot")


@pytest.fixture(scope="module")
def demo():
    return load_model(str(DEMO), "cpu")


@pytest.fixture(scope="module")
def tiny():
    return load_model(str(TINY), "cpu")


def engine_for(loaded, **kwargs):
    from serving.engine import Engine

    return Engine(*loaded, **kwargs).start()


def spoken(name: str) -> list[dict]:
    wave, rate = sf.read(DEMO / "examples" / f"{name}.wav", dtype="float32")
    return [{"role": "system", "content": SYSTEM_PROMPTS["s2s"]},
            {"role": "user", "content": [{"type": "audio", "audio": wave, "sampling_rate": rate}]}]


def solo(loaded, conversation, mode, max_new_tokens=256):
    """What `generate` answers for this conversation alone: (text, waveform or None)."""
    model, processor = loaded
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")
    out = model.generate(**inputs, generation_mode=mode, max_new_tokens=max_new_tokens)
    text = processor.tokenizer.decode(out.sequences[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    wave = None if mode == "text" else out.waveform[0, : int(out.waveform_lengths[0])].numpy()
    return text, wave


def drain(handle):
    """(text joined from the deltas, audio joined from the chunks, the last event)."""
    text, audio = "", []
    for event in handle:
        if isinstance(event, TextDelta):
            text += event.text
        elif isinstance(event, AudioDelta):
            audio.append(event.audio)
    return text, (np.concatenate(audio) if audio else np.zeros(0, np.float32)), event


def test_a_batch_of_mixed_requests_gets_each_its_solo_answer(demo):
    engine = engine_for(demo)
    try:
        jobs = [(q, mode) for mode in ("text", "audio") for q in QUESTIONS]
        handles = [engine.submit(ChatRequest(spoken(q), mode=mode)) for q, mode in jobs]
        results = [drain(h) for h in handles]
    finally:
        engine.stop()
    assert engine.largest_batch > 1  # they really ran together
    for (question, mode), (text, audio, last) in zip(jobs, results):
        want_text, want_wave = solo(demo, spoken(question), mode)
        assert isinstance(last, Finished) and last.finish_reason == "stop"
        assert text == last.text == want_text and want_text
        if mode == "audio":  # the streamed chunks join into the solo waveform
            assert audio.shape == want_wave.shape
            np.testing.assert_allclose(audio, want_wave, atol=2e-4)
            assert last.usage.completion_audio_tokens * demo[0].speech_codec.config.samples_per_code == len(want_wave)
        else:
            assert audio.size == 0 and last.usage.completion_audio_tokens == 0
        assert last.usage.prompt_audio_tokens > 0 and last.usage.completion_tokens > 0


def test_a_request_joins_a_running_answer_and_leaves_when_it_ends(demo):
    engine = engine_for(demo)
    try:
        first = engine.submit(ChatRequest(spoken("capital_of_france"), mode="audio"))
        assert isinstance(next(iter(first)), TextDelta)  # the first answer is running
        late = engine.submit(ChatRequest(spoken("seven_plus_twelve"), mode="text"))
        late_text, _, late_end = drain(late)
        first_text, first_audio, _ = drain(first)
    finally:
        engine.stop()
    assert engine.largest_batch == 2
    assert late_text == solo(demo, spoken("seven_plus_twelve"), "text")[0]
    want_text, want_wave = solo(demo, spoken("capital_of_france"), "audio")
    # the first delta was taken off above; the rest of the answer follows it
    assert want_text.endswith(first_text) and len(first_text) < len(want_text)
    np.testing.assert_allclose(first_audio, want_wave, atol=2e-4)


def test_max_tokens_ends_the_answer_with_length(demo):
    engine = engine_for(demo)
    try:
        text, _, last = drain(engine.submit(ChatRequest(spoken("capital_of_france"), max_tokens=3)))
    finally:
        engine.stop()
    assert last.finish_reason == "length" and last.usage.completion_tokens == 2  # <abos>, then two words
    assert solo(demo, spoken("capital_of_france"), "text")[0].startswith(text) and text


def test_cancelled_and_timed_out_requests_leave_the_batch(tiny):
    engine = engine_for(tiny, max_new_tokens=5000, max_context=100_000)
    question = spoken("seven_plus_twelve")
    try:
        cancelled = engine.submit(ChatRequest(question, mode="audio"))
        next(iter(cancelled))
        cancelled.cancel()
        slow = engine.submit(ChatRequest(question, timeout=0.5))
        _, _, last = drain(slow)
        assert isinstance(last, Failed) and last.status == 408 and "0.5 s" in last.message
        deadline = time.monotonic() + 10
        while engine.live_rows and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.live_rows == 0 and engine.steps < 4000  # the random model never ends on its own
    finally:
        engine.stop()


def test_a_full_queue_refuses_and_a_bad_prompt_fails_alone(tiny):
    engine = engine_for(tiny, max_batch=1, max_queue=1, max_new_tokens=5000, max_context=100_000)
    try:
        running = engine.submit(ChatRequest(spoken("seven_plus_twelve")))
        next(iter(running))  # admitted: with max_batch=1 the next one waits in the queue
        waiting = engine.submit(ChatRequest([{"role": "user", "content": [{"type": "audio"}]}]))
        with pytest.raises(EngineBusy, match="busy"):
            engine.submit(ChatRequest(spoken("seven_plus_twelve")))
        running.cancel()
        _, _, last = drain(waiting)
        assert isinstance(last, Failed) and last.status == 400 and "audio item needs its audio" in last.message
        fine = engine.submit(ChatRequest(spoken("seven_plus_twelve"), max_tokens=4))
        assert isinstance(drain(fine)[2], Finished)  # the engine keeps serving
    finally:
        engine.stop()


def test_seeded_sampling_is_reproducible_and_keyed_apart(tiny):
    engine = engine_for(tiny)
    sampled = SamplingParams(temperature=0.9, top_p=0.9, seed=3)
    try:
        runs = [drain(engine.submit(ChatRequest(spoken("opposite_of_hot"), sampling=sampled, max_tokens=12)))[0]
                for _ in range(2)]
        greedy = drain(engine.submit(ChatRequest(spoken("opposite_of_hot"), max_tokens=12)))[0]
    finally:
        engine.stop()
    assert runs[0] == runs[1]
    assert sampled.session_key() != SamplingParams().session_key() and greedy != runs[0]


def test_requests_are_checked():
    with pytest.raises(ValueError, match="mode must be one of"):
        ChatRequest([], mode="speech")
    with pytest.raises(ValueError, match="max_tokens must be at least 1"):
        ChatRequest([], max_tokens=0)
    assert SamplingParams(temperature=0).generate_kwargs() == {"do_sample": False}


def test_a_conversation_longer_than_the_context_is_refused(tiny):
    engine = engine_for(tiny, max_new_tokens=8)
    limit = engine.context_length  # the tiny backbone's positions
    try:
        long_text = " ".join(["word"] * limit)
        _, _, last = drain(engine.submit(ChatRequest([{"role": "user", "content": long_text}])))
        fits = drain(engine.submit(ChatRequest([{"role": "user", "content": "word"}], max_tokens=4)))[2]
    finally:
        engine.stop()
    assert isinstance(last, Failed) and last.status == 400 and last.code == "context_length_exceeded"
    assert f"context of {limit} positions" in last.message and isinstance(fits, Finished)
