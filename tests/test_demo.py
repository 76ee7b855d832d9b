"""The embedded demo checkpoint, loaded the way a Hub user loads it (fresh process, trust_remote_code)."""

import json
from pathlib import Path

from remote_code import run_without_package
from training.evaluate import is_correct

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "checkpoints" / "omnidrca-demo"

ANSWER = """
import json, sys
import numpy as np, torch
from transformers import AutoModel, AutoProcessor
torch.set_num_threads(1)
folder, wav = sys.argv[1], sys.argv[2]
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
conversation = [{"role": "user", "content": [{"type": "audio", "audio": wav}]}]
inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                       return_tensors="pt")
text_only = model.generate(**inputs, generation_mode="text", max_new_tokens=60)
both = model.generate(**inputs, generation_mode="audio", max_new_tokens=60)
wave = processor.post_process_multimodal_output(both, generation_mode="audio")[0]
print(json.dumps({
    "text": processor.post_process_multimodal_output(text_only, generation_mode="text")[0],
    "audio_text": processor.post_process_multimodal_output(both, generation_mode="text")[0],
    "dtype": str(next(model.parameters()).dtype),
    "seconds": len(wave) / model.speech_codec.config.sampling_rate,
    "rms": float(np.sqrt(np.mean(np.square(wave)))) if len(wave) else 0.0,
}))
"""


def test_demo_checkpoint_is_small_and_complete():
    size = sum(f.stat().st_size for f in DEMO.rglob("*") if f.is_file())
    assert size <= 60 * 2**20
    config = json.loads((DEMO / "config.json").read_text())
    assert config["auto_map"]["AutoModel"].endswith("OmniDRCAForConditionalGeneration") and config["dtype"] == "float32"
    for name in ("model.safetensors", "processor_config.json", "tokenizer.json", "README.md", "modeling_omnidrca.py"):
        assert (DEMO / name).exists(), name
    assert (DEMO / "README.md").read_text().startswith("---\n")


def test_demo_answers_a_bundled_question_in_text_and_speech(tmp_path):
    questions = json.loads((DEMO / "examples" / "questions.json").read_text())
    wav = "seven_plus_twelve.wav"
    assert questions[wav]["question"] == "what is seven plus twelve"
    out = json.loads(run_without_package(ANSWER, [DEMO, DEMO / "examples" / wav], tmp_path).strip().splitlines()[-1])
    assert is_correct("seven plus twelve is nineteen", out["text"]), out
    assert is_correct("seven plus twelve is nineteen", out["audio_text"]), out
    assert out["dtype"] == "torch.float32"  # stored in float16, computed in float32
    assert out["seconds"] > 0.5 and out["rms"] > 0.01, out  # a spoken answer, not silence


def test_readme_main_command_answers_with_the_demo(tmp_path):
    import subprocess
    import sys

    import soundfile as sf

    answer = tmp_path / "answer.wav"
    proc = subprocess.run(
        [sys.executable, "-m", "modeling_omnidrca", "--model", str(DEMO), "--audio",
         str(DEMO / "examples" / "seven_plus_twelve.wav"), "--save", str(answer)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("answer: ") and is_correct("seven plus twelve is nineteen", lines[0]), lines[:3]
    assert lines[1].startswith("spoken answer: ") and lines[1].endswith(f"written to {answer}"), lines[:3]
    wave, rate = sf.read(answer)
    assert rate == 16000 and len(wave) > 8000


LORA = ROOT / "checkpoints" / "omnidrca-demo-lora-numbers"


def test_lora_adapter_teaches_the_demo_a_new_relation():
    import torch
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModel, AutoProcessor

    config = json.loads((LORA / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == "checkpoints/omnidrca-demo"
    with safe_open(LORA / "adapter_model.safetensors", "pt") as f:
        names = list(f.keys())
    # Only backbone adapters: the speech head and everything else stay the base model's.
    assert names and all("lora_" in n and ".language_model.layers." in n for n in names)

    torch.set_num_threads(1)
    processor = AutoProcessor.from_pretrained(DEMO, trust_remote_code=True)
    questions = json.loads((LORA / "examples" / "questions.json").read_text())
    wav = "double_seven.wav"
    assert questions[wav]["question"] == "can you double seven"
    conversation = [{"role": "user", "content": [{"type": "audio", "audio": str(LORA / "examples" / wav)}]}]
    inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                           return_tensors="pt")

    def answer(model) -> str:
        out = model.generate(**inputs, generation_mode="text", max_new_tokens=40)
        return processor.post_process_multimodal_output(out, generation_mode="text")[0]

    base = AutoModel.from_pretrained(DEMO, trust_remote_code=True).eval()
    before = answer(base)
    adapted = PeftModel.from_pretrained(base, LORA).merge_and_unload().eval()
    after = answer(adapted)
    assert not is_correct("seven plus seven is fourteen", before), before  # new to the demo model
    assert is_correct("seven plus seven is fourteen", after), after
