"""Synthesise the Space's extra example questions with the project's corpus builder (espeak-ng, held-out voices).

    python space/examples/make_examples.py     # from the repository root; rewrites the wavs and questions.json

Voices, rates and pitches come from the held-out pools, as the checkpoint's own examples do: a visitor
hears what the demo does on voices it never trained on. Small files (16 kHz mono 16-bit, ~2 s each).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import soundfile as sf

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # run from a checkout: processing/ is not installed
from processing.corpus import synthesize
from processing.schema import SAMPLING_RATE

# file -> (question, task on the page, voice, rate, pitch)
EXAMPLES = {
    "three_times_four.wav": ("how much is three times four", "Answer my question", "en-gb-scotland+f5", 155, 45),
    "color_of_the_sky.wav": ("what color is the sky", "Answer my question", "en-us+m7", 155, 50),
    "sound_of_a_cat.wav": ("what sound does a cat make", "Answer my question", "en-029+m6", 155, 50),
    "repeat_tokyo.wav": ("the capital of japan is tokyo", "Repeat after me", "en-gb-x-gbcwmd+f2", 155, 50),
}


def main() -> None:
    index = {}
    for name, (question, task, voice, rate, pitch) in EXAMPLES.items():
        sf.write(HERE / name, synthesize(question, voice, rate, pitch), SAMPLING_RATE, subtype="PCM_16")
        index[name] = {"question": question, "task": task, "voice": voice, "rate": rate, "pitch": pitch}
    (HERE / "questions.json").write_text(json.dumps(index, indent=2) + "\n")
    print(f"wrote {len(index)} examples to {HERE}")


if __name__ == "__main__":
    main()
