"""Retraining a codec's decoder under a trained model: growth, a frozen encoder, the checked swap."""

import copy
import math
import shutil
from pathlib import Path

import pytest
import torch

from modeling_omnidrca import (
    OmniDRCAForConditionalGeneration,
    OmniDRCAProcessor,
    OmniDRCASpeechCodec,
    OmniDRCASpeechCodecConfig,
)
from modeling_omnidrca.streaming_omnidrca import receptive_radius_codes
from training.codec import freeze_encoder, grow_decoder
from training.replace_codec import check_same_codes, replace_codec
from training.replace_codec import main as replace_codec_main

TINY = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "tiny-random-omnidrca"
SR = 16000


def tiny_codec(seed: int = 0, **overrides) -> OmniDRCASpeechCodec:
    torch.manual_seed(seed)
    kwargs = dict(fsq_levels=[5, 5, 5], encoder_hidden_size=32, decoder_hidden_size=32, encoder_layers=1,
                  decoder_layers=1)
    return OmniDRCASpeechCodec(OmniDRCASpeechCodecConfig(**{**kwargs, **overrides})).eval()


def voiced(seconds: float = 0.6, f0: float = 140.0) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    return sum((0.3 / h) * torch.sin(2 * math.pi * f0 * h * t) for h in range(1, 5))[None]  # (1, T)


def adam_steps(codec: OmniDRCASpeechCodec, wave: torch.Tensor, steps: int = 3) -> None:
    codec.train()
    trainable = [p for p in codec.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(trainable, lr=1e-2)
    for _ in range(steps):
        codec(input_values=wave).loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    codec.eval()


@torch.no_grad()
def test_a_grown_decoder_starts_as_the_old_one_and_saves_its_depth(tmp_path):
    codec, wave = tiny_codec(), voiced()
    codes = codec.encode(wave)
    before = codec.decode(codes)
    radius = receptive_radius_codes(codec.config)
    grow_decoder(codec, 2)
    assert codec.config.decoder_layers == 3 and all(len(blocks) == 3 for blocks in codec.decoder.stages)
    torch.testing.assert_close(codec.decode(codes), before, rtol=0, atol=1e-6)
    assert receptive_radius_codes(codec.config) > radius  # streaming decoders read the wider field
    codec.save_pretrained(tmp_path)
    loaded = OmniDRCASpeechCodec.from_pretrained(tmp_path).eval()
    assert loaded.config.decoder_layers == 3
    torch.testing.assert_close(loaded.decode(codes), before, rtol=0, atol=1e-6)


def test_growth_refuses_a_negative_depth():
    with pytest.raises(ValueError, match="grow_decoder_layers"):
        grow_decoder(tiny_codec(), -1)


def test_a_frozen_encoder_keeps_the_codes_while_the_decoder_learns():
    codec, wave = tiny_codec(), voiced()
    with torch.no_grad():
        codes, before = codec.encode(wave), codec.decode(codec.encode(wave))
    grow_decoder(codec, 1)
    trainable = freeze_encoder(codec)
    assert trainable == sum(p.numel() for n, p in codec.named_parameters() if not n.startswith("encoder."))
    adam_steps(codec, wave)
    with torch.no_grad():
        assert torch.equal(codec.encode(wave), codes)
        assert (codec.decode(codes) - before).abs().max() > 1e-4
    # Without the freeze the same steps move the encoder, and with it (sooner or later) the codes' meaning.
    free = tiny_codec()
    adam_steps(free, wave)
    assert any(not torch.equal(a, b) for a, b in zip(free.encoder.parameters(), tiny_codec().encoder.parameters()))


def model_and_retrained_codec() -> tuple[OmniDRCAForConditionalGeneration, OmniDRCASpeechCodec]:
    model = OmniDRCAForConditionalGeneration.from_pretrained(TINY).eval()
    codec = OmniDRCASpeechCodec(copy.deepcopy(model.config.codec_config))  # as loaded from its own folder
    codec.load_state_dict(model.speech_codec.state_dict())
    grow_decoder(codec, 1)
    freeze_encoder(codec)
    adam_steps(codec, voiced(0.8))
    return model, codec


def test_replace_codec_swaps_the_decoder_and_the_model_reloads_with_it(tmp_path):
    model, codec = model_and_retrained_codec()
    codes = torch.randint(0, codec.config.codebook_size, (1, 12))
    with torch.no_grad():
        old, new = model.speech_codec.decode(codes), codec.decode(codes)
    assert (old - new).abs().max() > 1e-4
    replace_codec(model, codec)
    assert model.speech_codec is codec and model.config.codec_config.decoder_layers == len(codec.decoder.stages[0])
    assert not any(p.requires_grad for p in model.speech_codec.parameters())
    model.save_pretrained(tmp_path)
    loaded = OmniDRCAForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.config.codec_config.decoder_layers == codec.config.decoder_layers
    with torch.no_grad():
        torch.testing.assert_close(loaded.speech_codec.decode(codes), new, rtol=1e-5, atol=1e-6)


def test_replace_codec_refuses_a_codec_whose_codes_mean_something_else():
    model, codec = model_and_retrained_codec()
    check_same_codes(model.speech_codec, codec)  # the retrained decoder passes
    with torch.no_grad():
        codec.encoder.proj.weight.add_(1e-3)
    with pytest.raises(ValueError, match="encoder differs.*--freeze_encoder"):
        replace_codec(model, codec)
    other = OmniDRCASpeechCodec(OmniDRCASpeechCodecConfig(**{**model.config.codec_config.to_dict(), "fsq_levels": [3, 3]}))
    with pytest.raises(ValueError, match="fsq_levels"):
        replace_codec(model, other)


def test_replace_codec_command_writes_a_folder_that_loads_with_the_new_decoder(tmp_path):
    _, codec = model_and_retrained_codec()
    codec.save_pretrained(tmp_path / "codec")
    model_dir = tmp_path / "model"
    shutil.copytree(TINY, model_dir)
    (model_dir / "compact.json").write_text('{"rank": 54}')
    replace_codec_main(["--model", str(model_dir), "--codec", str(tmp_path / "codec"), "--output", str(tmp_path / "out")])
    loaded = OmniDRCAForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    codes = torch.randint(0, codec.config.codebook_size, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(loaded.speech_codec.decode(codes), codec.decode(codes), rtol=1e-5, atol=1e-6)
    assert OmniDRCAProcessor.from_pretrained(tmp_path / "out").tokenizer.vocab_size > 0
    assert (tmp_path / "out" / "compact.json").read_text() == '{"rank": 54}'  # the backbone is still that cut
    with pytest.raises(ValueError, match="fsq_levels"):
        other = OmniDRCASpeechCodec(OmniDRCASpeechCodecConfig(**{**codec.config.to_dict(), "fsq_levels": [3, 3]}))
        other.save_pretrained(tmp_path / "other")
        replace_codec_main(["--model", str(model_dir), "--codec", str(tmp_path / "other"), "--output", str(tmp_path / "no")])
    assert not (tmp_path / "no").exists()  # nothing written for a refused codec
