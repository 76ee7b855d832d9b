"""The quickstart CLI (`python -m modeling_omnidrca`): the answer first, then where its speech went; the tour of
grouped positions, streams and losses only with --explain or for the random test checkpoint."""

import subprocess
import sys
from pathlib import Path

import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
DEMO = "checkpoints/omnidrca-demo"
TOUR = ("LLM positions at 5 Hz", "training forward", "step 0:", "speech codec:", "M params")


def quickstart(*args: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "modeling_omnidrca", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.splitlines()


def test_the_demo_checkpoint_prints_its_answer_first_and_no_diagnostics(tmp_path):
    # The README's command, as a user runs it.
    lines = quickstart("--model", DEMO, "--audio", f"{DEMO}/examples/seven_plus_twelve.wav",
                       "--save", str(tmp_path / "answer.wav"))
    assert lines[0] == "answer: seven plus twelve is nineteen"
    assert lines[1].startswith("spoken answer: ") and lines[1].endswith(f"written to {tmp_path / 'answer.wav'}")
    wave, rate = sf.read(tmp_path / "answer.wav")
    assert rate == 16000 and len(wave) / rate > 0.5
    out = "\n".join(lines)
    for removed in (*TOUR, "random checkpoint gives noise", "randomly initialised", "meaningless"):
        assert removed not in out, removed
    assert len(lines) == 3 and "--explain" in lines[2]
    explained = "\n".join(quickstart("--model", DEMO, "--explain", "--max-new-tokens", "5"))
    assert all(part in explained for part in TOUR) and "made-up answer codes" in explained
    assert "meaningless" not in explained and "synthetic test signal, not speech" in explained


def test_the_random_fixture_says_so_and_tours_the_model():
    lines = quickstart("--model", "tests/fixtures/tiny-random-omnidrca", "--seconds", "3")
    out = "\n".join(lines)
    assert lines[0].startswith("answer: ") and lines[1].startswith("spoken answer: ")
    assert "randomly initialised checkpoint: the answer's words and sound are meaningless" in out
    # 3 s -> 300 mel frames -> 75 frames at 25 Hz -> 15 positions at k=5.
    assert "300 mel frames (100 Hz) -> 15 LLM positions at 5 Hz" in out
    assert "training forward on it: loss" in out and "12 greedy steps" in out
    # 13 codes at 25 Hz through the codec: 13 x 640 samples at 16 kHz.
    assert "13 codes at 25 Hz -> 8320 samples = 0.52 s at 16000 Hz" in out
    assert out.index("answer: ") < out.index("LLM positions")  # the answer comes before the tour
    quiet = "\n".join(quickstart("--model", "tests/fixtures/tiny-random-omnidrca", "--no-explain"))
    assert "meaningless" in quiet and not any(part in quiet for part in TOUR)
