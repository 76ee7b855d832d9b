import dataclasses

import pytest
from transformers import AutoConfig, PreTrainedConfig

from modeling_omnidrca import OmniDRCAConfig
from omnidrca_tester import OmniDRCAModelTester


def test_defaults_describe_the_published_system():
    config = OmniDRCAConfig()
    assert (config.group_size, config.speech_delay, config.speech_vocab_size) == (5, 2, 6561)
    assert config.text_config.model_type == "qwen2" and config.text_config.hidden_size == 3584
    assert config.audio_config.d_model == 1280 and config.audio_config.num_mel_bins == 128
    assert config.srh_config.hidden_size == 896
    # Special speech tokens follow the 6561 codes; the SRH's vocabulary is the speech vocabulary.
    assert (config.speech_bos_token_id, config.speech_eos_token_id, config.speech_pad_token_id) == (6561, 6562, 6563)
    assert config.srh_config.vocab_size == config.speech_embed_vocab_size == 6564
    assert config.speech_head_type == "srh" and config.hidden_size == 3584
    assert config.codec_config.codebook_size == 6561 and config.codec_config.sampling_rate == 16000
    # The speech vocabulary follows the codec when not given.
    assert OmniDRCAConfig(codec_config={"fsq_levels": [8, 5, 5, 5]}).speech_vocab_size == 1000


def test_roundtrip_through_json(tmp_path):
    config = OmniDRCAModelTester(group_size=1, speech_delay=3, contrastive_weight=0.0).get_config()
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert type(loaded) is OmniDRCAConfig
    strip = lambda d: {k: v for k, v in d.items() if k != "_name_or_path"}  # noqa: E731
    assert strip(loaded.to_dict()) == strip(config.to_dict())
    assert loaded.text_config.num_hidden_layers == 2 and loaded.audio_config.encoder_layers == 2


def test_srh_vocab_follows_the_speech_vocab_whatever_the_user_passes():
    config = OmniDRCAModelTester(srh_config={"model_type": "qwen2", "vocab_size": 5}).get_config()
    assert config.srh_config.vocab_size == 32 + 3  # codes + bos/eos/pad


def test_every_field_is_documented():
    own = {f.name for f in dataclasses.fields(OmniDRCAConfig)} - {f.name for f in dataclasses.fields(PreTrainedConfig)}
    own.add("tie_word_embeddings")
    undocumented = [name for name in sorted(own) if f"        {name} (" not in OmniDRCAConfig.__doc__]
    assert not undocumented


@pytest.mark.parametrize("delay", [-1, 1.5])
def test_bad_delay(delay):
    with pytest.raises((ValueError, TypeError)):
        OmniDRCAConfig(speech_delay=delay)
