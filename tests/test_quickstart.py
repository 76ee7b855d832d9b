"""The quickstart CLI (`python -m modeling_omnidrca`) runs and shows the grouped positions it promises."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_quickstart_runs_on_the_tiny_fixture():
    proc = subprocess.run(
        [sys.executable, "-m", "modeling_omnidrca", "--model", "tests/fixtures/tiny-random-omnidrca", "--seconds", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 3 s -> 300 mel frames -> 75 frames at 25 Hz -> 15 positions at k=5.
    assert "300 mel frames (100 Hz) -> 15 LLM positions at 5 Hz" in proc.stdout
    assert "training forward: loss" in proc.stdout and "greedy text+speech generation (12 steps" in proc.stdout
    # 13 codes at 25 Hz through the codec: 13 x 640 samples at 16 kHz.
    assert "13 codes at 25 Hz -> 8320 samples = 0.52 s at 16000 Hz" in proc.stdout
