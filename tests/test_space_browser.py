"""The Space in a real browser: Playwright for Python driving Debian's Chromium (`apt-get install chromium`,
installed by .ci/run; no `playwright install`), against `python space/app.py` on a free local port."""

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
QUESTION = ROOT / "checkpoints" / "omnidrca-demo" / "examples" / "seven_plus_twelve.wav"


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
    fresh.close()


def test_model_given_as_a_relative_path_selects_the_bundled_entry(page):
    # The dropdown shows the folder's name, not a duplicate entry for the path typed on the command line.
    assert page.locator("#model-choice input").input_value() == "omnidrca-demo"
