"""TRL SFT training of the full multi-part loss, and LoRA through PEFT (tiny configs, CPU)."""

import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from modeling_omnidrca import OmniDRCAFeatureExtractor, OmniDRCAForConditionalGeneration, OmniDRCAProcessor
from modeling_omnidrca.tokenization import stream_token_ids, train_text_tokenizer
from omnidrca_tester import OmniDRCAModelTester
from processing.cache import add_answer_codes
from processing.schema import FEATURES, SYSTEM_PROMPTS, to_int16
from training.sft import LOSS_COMPONENTS, OmniDRCACollator, build_trainer, sft_config

WORDS = "what is one two three plus minus seven nine twelve the capital of france paris is".split()


def tone(seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * freq * t) * np.sin(2 * np.pi * 2 * t)).astype(np.float32)


def rows(n: int = 8) -> Dataset:
    tasks = ["s2s", "s2t", "asr", "t2s"]
    out = []
    for i in range(n):
        task = tasks[i % 4]
        question = " ".join(WORDS[(i + j) % len(WORDS)] for j in range(4))
        answer = " ".join(WORDS[(2 * i + j) % len(WORDS)] for j in range(3))
        out.append(dict(
            id=f"r{i}", task=task, system_prompt=SYSTEM_PROMPTS[task], question_text=question,
            question_audio=[] if task == "t2s" else to_int16(tone(0.8 + 0.1 * i, 200 + 20 * i)).tolist(),
            answer_text=question if task == "asr" else answer,
            answer_audio=to_int16(tone(0.5 + 0.05 * i, 300 + 10 * i)).tolist() if task in ("s2s", "t2s") else [],
            voice=f"v{i % 2}", rate=160, pitch=50, template="t0", source="test",
        ))
    return Dataset.from_list(out, features=FEATURES)


@pytest.fixture(scope="module")
def setup():
    tokenizer = train_text_tokenizer([" ".join(WORDS)] * 4, vocab_size=300)
    text = dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    config = OmniDRCAModelTester(text_config=text, **stream_token_ids(tokenizer)).get_config()
    processor = OmniDRCAProcessor(OmniDRCAFeatureExtractor(), tokenizer, speech_vocab_size=config.speech_vocab_size)
    torch.manual_seed(0)
    codec_source = OmniDRCAForConditionalGeneration(config)
    data = add_answer_codes(rows(), codec_source.speech_codec)
    return config, processor, data


def fresh_model(config):
    torch.manual_seed(0)
    return OmniDRCAForConditionalGeneration(config)


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_answer_codes_are_cached_for_speech_answers_only(setup):
    config, processor, data = setup
    for row in data:
        if row["answer_audio"]:
            assert len(row["answer_codes"]) == math.ceil(len(row["answer_audio"]) / 640)
            assert all(0 <= c < config.speech_vocab_size for c in row["answer_codes"])
        else:
            assert row["answer_codes"] == []


def test_sft_steps_train_text_head_srh_and_speech_encoder(setup, tmp_path):
    config, processor, data = setup
    model = fresh_model(config)
    before = snapshot(model)
    args = sft_config(str(tmp_path), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2,
                      logging_steps=1, save_strategy="no", use_cpu=True)
    trainer = build_trainer(model, processor, data, args)
    trainer.train()
    moved = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert "lm_head.weight" in moved or "model.language_model.embed_tokens.weight" in moved
    assert any(n.startswith("speech_head.") for n in moved)
    assert any(n.startswith("model.audio_tower.") for n in moved)
    assert any(n.startswith("model.multi_modal_projector.") for n in moved)
    assert not any(n.startswith("speech_codec.") for n in moved)  # the codec stays frozen
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logged and all(name in logged[0] for name in LOSS_COMPONENTS if name != "stop_loss")  # stop: diffusion head
    assert "stop_loss" not in logged[0]
    tokens = [entry["num_tokens"] for entry in logged]
    assert tokens[0] > 0 and tokens == sorted(tokens) and len(set(tokens)) == len(tokens)  # a running total
    metrics = trainer.evaluate(data)  # eval goes through compute_loss too: its components carry `eval_`
    assert all(f"eval_{name}" in metrics for name in ("text_loss", "speech_loss", "contrastive_loss"))


def test_logged_loss_is_the_models_full_loss(setup, tmp_path):
    config, processor, data = setup
    model = fresh_model(config)
    batch = OmniDRCACollator(processor)(list(data))
    with torch.no_grad():
        expected = model(**batch)
    # One step on the whole dataset as one batch, learning rate 0: the logged figures are this forward's.
    args = sft_config(str(tmp_path), max_steps=1, per_device_train_batch_size=len(data), learning_rate=0.0,
                      logging_steps=1, save_strategy="no", use_cpu=True)
    trainer = build_trainer(model, processor, data, args)
    trainer.train()
    log = next(entry for entry in trainer.state.log_history if "loss" in entry)
    assert expected.speech_loss is not None and expected.contrastive_loss is not None
    full = (expected.text_loss + config.speech_loss_weight * expected.speech_loss
            + config.contrastive_weight * expected.contrastive_loss)
    assert log["loss"] == pytest.approx(float(full), rel=1e-5)
    for name in LOSS_COMPONENTS:
        if getattr(expected, name) is not None:  # stop_loss: the diffusion head's only
            assert log[name] == pytest.approx(float(getattr(expected, name)), rel=1e-5)
    assert float(full) > float(expected.text_loss) + 0.1  # the speech term really is part of it


def test_lora_trains_only_adapters_and_saved_modules_then_merges(setup, tmp_path):
    from peft import LoraConfig, PeftModel

    config, processor, data = setup
    model = fresh_model(config)
    base = snapshot(model)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=r"model\.language_model\.layers\.\d+\.self_attn\.(q|v)_proj",
                      modules_to_save=["speech_head"])
    args = sft_config(str(tmp_path / "run"), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2,
                      logging_steps=1, save_strategy="no", use_cpu=True)
    trainer = build_trainer(model, processor, data, args, peft_config=lora)
    trainer.train()
    peft_model = trainer.model

    def plain(name: str) -> str:  # the parameter's name in the un-wrapped model
        for wrapper in ("base_model.model.", ".base_layer", "modules_to_save.default.", "original_module."):
            name = name.replace(wrapper, "")
        return name

    lora_moved, saved_moved = [], []
    for name, param in peft_model.named_parameters():
        if "lora_" in name:
            lora_moved += [name] if "lora_B" in name and param.detach().abs().sum() > 0 else []
        elif "modules_to_save" in name:
            saved_moved += [name] if not torch.equal(param.detach(), base[plain(name)]) else []
        else:
            assert torch.equal(param.detach(), base[plain(name)]), f"base weight {name} moved"
    assert lora_moved and saved_moved

    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)
    batch = OmniDRCACollator(processor)(list(data)[:4])
    with torch.no_grad():
        trained = peft_model(**batch).loss
    reloaded = PeftModel.from_pretrained(fresh_model(config), adapter_dir)
    merged = reloaded.merge_and_unload()
    with torch.no_grad():
        assert float(merged(**batch).loss) == pytest.approx(float(trained), rel=1e-4)
        assert float(fresh_model(config)(**batch).loss) != pytest.approx(float(trained), rel=1e-4)


def test_empty_dataset_is_refused(setup, tmp_path):
    config, processor, data = setup
    with pytest.raises(ValueError, match="empty"):
        build_trainer(fresh_model(config), processor, data.select([]), sft_config(str(tmp_path), use_cpu=True))
