"""Saving, loading, Auto classes, trust_remote_code, the tiny-random fixture and the golden regression."""

import filecmp
import json
import textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel, AutoModelForMultimodalLM

from modeling_omnidrca import OmniDRCAForConditionalGeneration
from omnidrca_tester import OmniDRCAModelTester
from remote_code import run_without_package

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "tiny-random-omnidrca"
GOLDEN = REPO / "tests" / "fixtures" / "tiny-random-omnidrca-golden.safetensors"
MODEL_CODE = ("configuration_omnidrca.py", "modeling_omnidrca.py", "streams.py", "compose.py", "codec_omnidrca.py",
              "audio_utils.py", "diffusion_head.py")
PACKAGE_CODE = (*MODEL_CODE, "processing_omnidrca.py", "feature_extraction_omnidrca.py", "tokenization.py")


def golden_inputs() -> dict:
    golden = load_file(GOLDEN)
    return {k.removeprefix("input."): v for k, v in golden.items() if k.startswith("input.")}


def test_save_load_roundtrip_with_auto_classes(tmp_path):
    tester = OmniDRCAModelTester()
    config = tester.get_config()
    torch.manual_seed(0)
    model = OmniDRCAForConditionalGeneration(config).eval()
    inputs = tester.prepare_inputs(config)
    model.save_pretrained(tmp_path)

    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    assert set(MODEL_CODE) <= files
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForMultimodalLM"}

    assert type(AutoConfig.from_pretrained(tmp_path)).__name__ == "OmniDRCAConfig"
    with torch.no_grad():
        expected = model(**inputs)
        for loader in (OmniDRCAForConditionalGeneration, AutoModel, AutoModelForMultimodalLM):
            loaded = loader.from_pretrained(tmp_path).eval()
            assert type(loaded) is OmniDRCAForConditionalGeneration
            out = loaded(**inputs)
            torch.testing.assert_close(out.logits, expected.logits, rtol=0, atol=0)
            torch.testing.assert_close(out.speech_logits, expected.speech_logits, rtol=0, atol=0)
            torch.testing.assert_close(out.loss, expected.loss, rtol=0, atol=0)
    state = model.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, state[name]), name


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModel, AutoModelForMultimodalLM

    folder, inputs_file, out_file = sys.argv[1:4]
    inputs = load_file(inputs_file)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    assert type(config).__module__.startswith("transformers_modules."), type(config).__module__
    outs = {}
    for name, auto in (("auto_model", AutoModel), ("multimodal", AutoModelForMultimodalLM)):
        model = auto.from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__name__ == "OmniDRCAForConditionalGeneration"
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        assert model.output_modalities == ("text", "audio")
        with torch.no_grad():
            out = model(**inputs)
        outs[name + ".logits"] = out.logits
        outs[name + ".losses"] = torch.stack([out.loss, out.text_loss, out.speech_loss, out.contrastive_loss])
    if len(sys.argv) > 4:  # a full checkpoint: processor too, and speech decoded by the model's codec
        from transformers import AutoProcessor

        proc = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        proc.check_model_compatibility(model.config)
        codes = torch.arange(12)[None] % model.config.speech_vocab_size
        (wave,) = proc.decode_speech(codes, model.speech_codec)
        assert wave.shape == (12 * model.speech_codec.config.samples_per_code,), wave.shape
        outs["prompt_ids"] = proc.apply_chat_template(
            [{"role": "user", "content": "what is seven plus one"}], add_generation_prompt=True, tokenize=True,
            return_dict=True, return_tensors="pt")["input_ids"]
    assert "modeling_omnidrca" not in sys.modules
    save_file({k: v.contiguous() for k, v in outs.items()}, out_file)
    """
)


def run_remote(folder: Path, inputs: dict, tmp_path: Path, with_processor: bool = False) -> dict:
    """Load `folder` with trust_remote_code where the package can't be imported; its outputs on `inputs`."""
    save_file({k: v.contiguous() for k, v in inputs.items()}, tmp_path / "inputs.safetensors")
    args = [folder, "inputs.safetensors", "out.safetensors"] + (["with_processor"] if with_processor else [])
    run_without_package(REMOTE_SCRIPT, args, tmp_path)
    return load_file(tmp_path / "out.safetensors")


def test_trust_remote_code_roundtrip_in_fresh_process(tmp_path):
    tester = OmniDRCAModelTester(group_size=1)
    config = tester.get_config()
    torch.manual_seed(1)
    model = OmniDRCAForConditionalGeneration(config).eval()
    saved = tmp_path / "saved model"  # a space in the path, as user folders have
    model.save_pretrained(saved)
    inputs = tester.prepare_inputs(config)
    with torch.no_grad():
        expected = model(**inputs)
    work = tmp_path / "work"
    work.mkdir()
    outs = run_remote(saved, inputs, work)
    for name in ("auto_model", "multimodal"):
        torch.testing.assert_close(outs[name + ".logits"], expected.logits, rtol=0, atol=0)
        losses = torch.stack([expected.loss, expected.text_loss, expected.speech_loss, expected.contrastive_loss])
        torch.testing.assert_close(outs[name + ".losses"], losses, rtol=0, atol=0)


def test_fixture_is_small_complete_and_carries_current_code():
    files = {p.name: p for p in FIXTURE.iterdir()}
    expected = {"config.json", "model.safetensors", "generation_config.json", "README.md", "processor_config.json",
                "tokenizer.json", "tokenizer_config.json", "chat_template.jinja", *PACKAGE_CODE}
    assert expected <= set(files)
    assert sum(p.stat().st_size for p in files.values()) < 5 * 2**20
    # Stale copied code would make trust_remote_code users run old code: regenerate with
    # `python tests/fixtures/make_tiny_random.py` after changing the package.
    for name in PACKAGE_CODE:
        assert filecmp.cmp(files[name], REPO / "modeling_omnidrca" / name, shallow=False), name


def test_fixture_loads_with_trust_remote_code_and_matches_golden(tmp_path):
    golden = load_file(GOLDEN)
    outs = run_remote(FIXTURE, golden_inputs(), tmp_path, with_processor=True)
    torch.testing.assert_close(outs["auto_model.logits"], golden["output.logits"], atol=1e-5, rtol=1e-5)
    from modeling_omnidrca import OmniDRCAProcessor

    local = OmniDRCAProcessor.from_pretrained(FIXTURE).apply_chat_template(
        [{"role": "user", "content": "what is seven plus one"}], add_generation_prompt=True, tokenize=True,
        return_dict=True, return_tensors="pt")["input_ids"]
    assert torch.equal(outs["prompt_ids"], local)
    torch.testing.assert_close(outs["auto_model.losses"], golden["output.losses"], atol=1e-5, rtol=1e-5)


def test_golden_regression():
    """Outputs of the seeded tiny model on a fixed batch, recorded by make_tiny_random.py."""
    golden = load_file(GOLDEN)
    model = OmniDRCAForConditionalGeneration.from_pretrained(FIXTURE).eval()
    with torch.no_grad():
        out = model(**golden_inputs())
    torch.testing.assert_close(out.logits, golden["output.logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.speech_logits, golden["output.speech_logits"], atol=1e-5, rtol=1e-5)
    losses = torch.stack([out.loss, out.text_loss, out.speech_loss, out.contrastive_loss])
    torch.testing.assert_close(losses, golden["output.losses"], atol=1e-5, rtol=1e-5)
