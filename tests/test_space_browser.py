"""The Space in a real browser: Playwright for Python driving Debian's Chromium (`apt-get install chromium`,
installed by .ci/run; no `playwright install`), against `python space/app.py` on a free local port."""

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "space"))

from omnidrca_space.testing import running_app

CHROMIUM = os.environ.get("OMNIDRCA_CHROMIUM", "/usr/bin/chromium")
QUESTION = ROOT / "checkpoints" / "omnidrca-demo" / "examples" / "seven_plus_twelve.wav"


@pytest.fixture(scope="module")
def page():
    # No skip: a missing browser is a broken test machine, and .ci/run installs it.
    assert Path(CHROMIUM).exists() or shutil.which(CHROMIUM), (
        f"Chromium not found at {CHROMIUM}: install it with `apt-get install chromium` (as .ci/run does) "
        "or point OMNIDRCA_CHROMIUM at a Chromium/Chrome executable.")
    from playwright.sync_api import sync_playwright

    # The model given the way a user types it (relative, through the environment) must select the bundled entry.
    env = {"OMNIDRCA_MODEL": "checkpoints/omnidrca-demo"}
    with running_app(env=env, cwd=ROOT) as (url, _), sync_playwright() as playwright:
        # Autoplay without a click: a headless page has no user gesture, and the live answer autoplays.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
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


def test_a_click_with_nothing_to_ask_shows_a_message(page):
    from playwright.sync_api import expect

    clear = page.locator('#question-audio button[aria-label="Clear"]')
    if clear.count():  # a question left from the previous test
        clear.click()
    page.click("#ask")
    expect(page.locator("#chat")).to_contain_text("Record or upload a question")
    expect(page.locator(".toast-body").first).to_contain_text("Record or upload a question")


def test_model_given_as_a_relative_path_selects_the_bundled_entry(page):
    # The dropdown shows the folder's name, not a duplicate entry for the path typed on the command line.
    assert page.locator("#model-choice input").input_value() == "omnidrca-demo"
