"""The Whisper-encoder feature loss for codec training (training/feature_loss.py) and its use by the codec recipe."""

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import WhisperConfig, WhisperModel

from processing.corpus import build_corpus
from training import train_codec as codec_recipe
from training.feature_loss import WhisperFeatureLoss

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"
SR = 16000


@pytest.fixture(scope="module")
def whisper_folder(tmp_path_factory):
    torch.manual_seed(0)
    config = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=2, decoder_layers=1,
                           decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=200,
                           vocab_size=64, num_mel_bins=80, pad_token_id=0, bos_token_id=1,
                           eos_token_id=2, decoder_start_token_id=1)
    folder = tmp_path_factory.mktemp("whisper")
    WhisperModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus"
    build_corpus(path, 8, 2, 0, seed=0, progress=False)
    return path


def voiced(seconds: float, f0: float) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    return sum((0.3 / h) * torch.sin(2 * math.pi * f0 * h * t) for h in range(1, 5))  # (T,)


def test_the_distance_is_zero_for_the_same_clip_and_grows_with_the_damage(whisper_folder):
    loss = WhisperFeatureLoss.from_pretrained(str(whisper_folder))
    torch.manual_seed(1)
    wave = torch.stack([voiced(1.0, 120.0), voiced(1.0, 210.0)])  # (2, T)
    noise = torch.randn_like(wave)
    assert loss(wave, wave).item() == 0.0
    distances = [loss(wave, wave + level * noise).item() for level in (0.003, 0.03, 0.3)]
    assert 0 < distances[0] < distances[1] < distances[2]


def test_the_gradient_reaches_the_reconstruction_and_never_the_encoder(whisper_folder):
    loss = WhisperFeatureLoss.from_pretrained(str(whisper_folder)).train()
    assert not loss.training and not any(p.requires_grad for p in loss.parameters())
    wave = voiced(0.8, 150.0)[None]
    recon = (wave + 0.05 * torch.randn_like(wave)).requires_grad_(True)
    loss(wave, recon).backward()
    assert recon.grad is not None and recon.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())


def test_samples_past_a_clips_length_do_not_count(whisper_folder):
    loss = WhisperFeatureLoss.from_pretrained(str(whisper_folder), layers=[2])
    short, long = voiced(0.5, 130.0), voiced(1.0, 180.0)
    torch.manual_seed(2)
    batch = torch.zeros(2, len(long))
    batch[0, : len(short)], batch[1] = short, long
    recon = batch + 0.02 * torch.randn_like(batch)
    lengths = torch.tensor([len(short), len(long)])
    garbage = recon.clone()
    garbage[0, len(short):] = torch.randn(len(long) - len(short))  # loud noise where the batch padded the clip
    torch.testing.assert_close(loss(batch, garbage, lengths), loss(batch, recon, lengths))
    assert loss(batch, garbage).item() > loss(batch, recon).item()  # without lengths the noise is heard


def test_layers_outside_the_encoder_are_refused(whisper_folder):
    with pytest.raises(ValueError, match="1..2"):
        WhisperFeatureLoss.from_pretrained(str(whisper_folder), layers=[3])
    with pytest.raises(ValueError, match="same"):
        WhisperFeatureLoss.from_pretrained(str(whisper_folder))(torch.zeros(1, 800), torch.zeros(1, 640))


def test_the_codec_recipe_adds_the_weighted_feature_loss(corpus, whisper_folder, tmp_path):
    script, args = codec_recipe.make_parser().parse_args_and_config([
        "--dataset_path", str(corpus), "--output_dir", str(tmp_path), "--fsq_levels", "4", "4", "2",
        "--encoder_hidden_size", "32", "--decoder_hidden_size", "32", "--encoder_layers", "1", "--decoder_layers", "1",
        "--feature_loss_model", str(whisper_folder), "--feature_loss_weight", "0.5", "--max_steps", "2",
        "--per_device_train_batch_size", "4", "--learning_rate", "3e-3", "--logging_steps", "1", "--save_steps", "2",
        "--eval_strategy", "no", "--max_eval_clips", "2", "--use_cpu", "true", "--report_to", "none",
    ])
    codec_recipe.main(script, args)
    history = json.loads((tmp_path / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    steps = [e for e in history if "loss" in e]
    assert len(steps) == 2
    for e in steps:
        assert e["feature_loss"] > 0
        assert e["loss"] == pytest.approx(e["mel_loss"] + e["stft_loss"] + 0.5 * e["feature_loss"], rel=1e-3)
    assert "feature_loss" not in json.dumps(json.loads((tmp_path / "config.json").read_text()))  # not the codec's


def test_the_second_decoder_recipe_keeps_the_codes_and_the_depth():
    script, _ = codec_recipe.make_parser().parse_args_and_config(["--config", str(CONFIGS / "codec_festival_decoder2.yaml")])
    assert script.freeze_encoder and script.grow_decoder_layers == 0
    assert script.codec_name_or_path == "runs/codec-festival-decoder" and script.feature_loss_model == "whisper-tiny.en"
    assert "data/corpus-smollm2-voice" in script.mix_dataset_paths
