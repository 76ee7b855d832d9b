"""The Space in a real browser: Playwright for Python driving Debian's Chromium (`apt-get install chromium`,
installed by .ci/run; no `playwright install`), against `python space/app.py` on a free local port (and, for a
model that raises, the same page served from this process)."""

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "space"))

from omnidrca_space.testing import running_app

CHROMIUM = os.environ.get("OMNIDRCA_CHROMIUM", "/usr/bin/chromium")
DEMO = ROOT / "checkpoints" / "omnidrca-demo"
QUESTION = DEMO / "examples" / "seven_plus_twelve.wav"


@pytest.fixture(scope="module")
def microphone_clip(tmp_path_factory) -> Path:
    """What Chromium's fake microphone hears: the question after 0.3 s of silence, then 3 s of silence
    (the fake device loops its file; the recording stops during that silence)."""
    wave, rate = sf.read(QUESTION, dtype="float32")
    path = tmp_path_factory.mktemp("microphone") / "mic.wav"
    sf.write(path, np.concatenate([np.zeros(int(0.3 * rate)), wave, np.zeros(3 * rate)]), rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def page(microphone_clip):
    # No skip: a missing browser is a broken test machine, and .ci/run installs it.
    assert Path(CHROMIUM).exists() or shutil.which(CHROMIUM), (
        f"Chromium not found at {CHROMIUM}: install it with `apt-get install chromium` (as .ci/run does) "
        "or point OMNIDRCA_CHROMIUM at a Chromium/Chrome executable.")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=60_000)  # a shared 2-core machine: answers can queue behind other work
    # The model given the way a user types it (relative, through the environment) must select the bundled entry.
    env = {"OMNIDRCA_MODEL": "checkpoints/omnidrca-demo"}
    with running_app(env=env, cwd=ROOT) as (url, _), sync_playwright() as playwright:
        # Autoplay without a click: a headless page has no user gesture, and the live answer autoplays.
        # A fake microphone that plays `microphone_clip`, granted without a permission prompt.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--autoplay-policy=no-user-gesture-required", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={microphone_clip}"])
        context = browser.new_context(viewport={"width": 1400, "height": 1200}, permissions=["microphone"])
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        page.wait_for_selector("#ask")
        yield page
        browser.close()


def test_page_says_what_the_demo_model_can_answer(page):
    intro = page.locator("body").inner_text()
    for phrase in ("small demo model", "trained from scratch on a 2-core CPU", "what is seven plus twelve",
                   "capital of france", "Spoken examples"):
        assert phrase in intro, phrase


def test_uploaded_question_is_answered_in_text_and_speech(page, tmp_path):
    from playwright.sync_api import expect

    page.click('#question-audio button[aria-label="Upload file"]')  # the microphone is the first source
    page.locator("#question-audio input[type=file]").set_input_files(str(QUESTION))
    page.wait_for_selector("#question-audio audio", state="attached")  # the upload is ready to play
    page.click("#ask")
    expect(page.locator("#chat")).to_contain_text("seven plus twelve is nineteen")
    expect(page.locator("#status")).to_contain_text("first audio after")
    # The live player got the streamed speech and played it (HLS segments encoded while generating).
    page.wait_for_function("document.querySelector('#live-audio audio')?.currentTime > 0", timeout=30_000)
    audio = page.locator("#answer-audio audio[src]")
    expect(audio.first).to_be_attached()
    assert audio.first.get_attribute("src")
    shot = Path(os.environ.get("OMNIDRCA_SCREENSHOT_DIR", tmp_path)) / "space_answer.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"\nscreenshot: {shot}")


def test_a_question_recorded_with_the_microphone_is_answered(page):
    from playwright.sync_api import expect

    clear = page.locator('#question-audio button[aria-label="Clear"]')
    if clear.count():  # the upload left by the previous test
        clear.click()
    page.click('#question-audio button[aria-label="Record audio"]')
    page.click("#question-audio button.record-button")
    page.wait_for_timeout(2600)  # 0.3 s lead + 1.8 s question, stopped in the silence after it
    page.click("#question-audio button.stop-button")
    page.wait_for_selector("#question-audio audio", state="attached")  # the recording is ready to send
    answers = page.locator("#chat").get_by_text("seven plus twelve is nineteen")
    before = answers.count()
    page.click("#ask")
    expect(answers).to_have_count(before + 1)


def test_a_click_with_nothing_to_ask_shows_a_message(page):
    from playwright.sync_api import expect

    fresh = page.context.new_page()  # a new visitor: nothing recorded, uploaded or typed
    fresh.goto(page.url)
    fresh.click("#ask")
    expect(fresh.locator("#chat")).to_contain_text("Record or upload a question")
    expect(fresh.locator(".toast-body").first).to_contain_text("Record or upload a question")
    # Nothing to say aloud: the live player is emptied, not left showing a stream that never plays.
    expect(fresh.locator("#live-audio audio")).to_have_count(0)
    fresh.close()


def test_a_file_that_is_not_audio_is_refused_when_it_is_uploaded(page, tmp_path):
    from playwright.sync_api import expect

    fake = tmp_path / "question.wav"  # text under an audio name: only reading it tells
    fake.write_text("this is not audio, only text named .wav")
    fresh = page.context.new_page()
    fresh.goto(page.url)
    fresh.click('#question-audio button[aria-label="Upload file"]')
    fresh.locator("#question-audio input[type=file]").set_input_files(str(fake))
    # Refused before any click on Ask: a toast and the status say why, and the input is empty again.
    expect(fresh.locator(".toast-body").first).to_contain_text("could not read “question.wav” as audio")
    expect(fresh.locator("#status")).to_contain_text("could not read “question.wav” as audio")
    expect(fresh.locator("#question-audio")).to_contain_text("Drop Audio Here")
    expect(fresh.locator("#question-audio audio")).to_have_count(0)
    fresh.click("#ask")
    expect(fresh.locator("#chat")).to_contain_text("Record or upload a question")
    fresh.close()


def test_model_given_as_a_relative_path_selects_the_bundled_entry(page):
    # The dropdown shows the folder's name, not a duplicate entry for the path typed on the command line.
    assert page.locator("#model-choice input").input_value() == "omnidrca-demo"
    # Under the intro, what the selected model can and cannot do (the demo has no card section: its table).
    assert "This is a small demo model" in page.locator("#model-capabilities").inner_text()


def test_a_failed_answer_names_the_error_and_leaves_no_player_playing(page, monkeypatch):
    # A model that raises needs the server in this process: the page of `running_app` has a working one.
    from playwright.sync_api import expect

    from omnidrca_space import ModelRegistry, build_demo, ffmpeg_bin_dir, find_ffmpeg
    from omnidrca_space.testing import free_port

    registry = ModelRegistry("cpu")

    def failing_stream(loaded, conversation, mode, sampling):
        raise RuntimeError("boom in the speech head")
        yield  # a generator, like the real one

    monkeypatch.setattr("omnidrca_space.ui.stream_answer", failing_stream)
    ffmpeg = find_ffmpeg()
    if ffmpeg:  # what app.py's `use_ffmpeg` sets for its whole process, here for this test only
        monkeypatch.setenv("PATH", f"{ffmpeg_bin_dir(ffmpeg)}{os.pathsep}{os.environ.get('PATH', '')}")
        if shutil.which("ffprobe") is None:
            monkeypatch.setattr("gradio.processing_utils.audio_is_playable", lambda path: True)
    demo = build_demo(str(DEMO), registry=registry).queue()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    visitor = page.context.new_page()
    try:
        visitor.goto(f"http://127.0.0.1:{port}/")
        visitor.click('#question-audio button[aria-label="Upload file"]')
        visitor.locator("#question-audio input[type=file]").set_input_files(str(QUESTION))
        visitor.wait_for_selector("#question-audio audio", state="attached")
        visitor.click("#ask")
        expect(visitor.locator("#chat")).to_contain_text("RuntimeError: boom in the speech head")
        # Before the fix the live player kept a stream that never got a segment: "playing" at 0:00 forever.
        visitor.wait_for_timeout(1500)  # the run's closing message comes after the last yield
        expect(visitor.locator("#live-audio audio")).to_have_count(0)
        visitor.click("#ask")  # the page keeps serving: the same failure, reported again
        expect(visitor.locator("#chat").get_by_text("RuntimeError: boom in the speech head")).to_have_count(2)
    finally:
        visitor.close()
        demo.close()
