"""Building OmniDRCA from pretrained backbones given as local folders (Hub ids take the same path)."""

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM, WhisperConfig, WhisperForConditionalGeneration

from modeling_omnidrca import OmniDRCAForConditionalGeneration, compose_from_backbones
from modeling_omnidrca.codec_omnidrca import OmniDRCASpeechCodec, OmniDRCASpeechCodecConfig
from omnidrca_tester import ABOS_ID, AEOS_ID, AUDIO_ID, TEXT_PAD_ID, OmniDRCAModelTester

TINY_CODEC = dict(fsq_levels=[4, 4, 2], encoder_hidden_size=16, encoder_layers=1, decoder_hidden_size=16,
                  decoder_layers=1)
SPECIAL = dict(audio_token_id=AUDIO_ID, assistant_bos_token_id=ABOS_ID, assistant_eos_token_id=AEOS_ID,
               text_pad_token_id=TEXT_PAD_ID)


def qwen(vocab, hidden, tie):
    return Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie)


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    root = tmp_path_factory.mktemp("backbones")
    torch.manual_seed(0)
    text = Qwen2ForCausalLM(qwen(vocab=90, hidden=32, tie=False))
    text.save_pretrained(root / "text")
    tied = Qwen2ForCausalLM(qwen(vocab=100, hidden=32, tie=True))
    tied.save_pretrained(root / "tied")
    whisper = WhisperForConditionalGeneration(WhisperConfig(
        vocab_size=60, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
        max_source_positions=1500, max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1, suppress_tokens=[], begin_suppress_tokens=[],
    ))
    whisper.save_pretrained(root / "whisper")
    srh = Qwen2ForCausalLM(qwen(vocab=50, hidden=16, tie=True))
    srh.save_pretrained(root / "srh")
    codec = OmniDRCASpeechCodec(OmniDRCASpeechCodecConfig(**TINY_CODEC))
    codec.save_pretrained(root / "codec")
    return root, text, tied, whisper, srh, codec


def test_compose_copies_backbone_weights(backbones):
    root, text, _, whisper, srh, codec = backbones
    model = OmniDRCAForConditionalGeneration.from_backbones(
        str(root / "text"), str(root / "whisper"), srh_model=str(root / "srh"), codec_model=str(root / "codec"),
        vocab_size=100, **SPECIAL,
    )
    assert model.config.speech_vocab_size == 32
    for name, tensor in codec.state_dict().items():
        assert torch.equal(model.speech_codec.state_dict()[name], tensor), name
    assert model.config.text_config.vocab_size == 100 and model.config.srh_config.hidden_size == 16
    lm = model.model.language_model
    # Original rows are kept when the vocabulary grows for the special tokens.
    assert torch.equal(lm.embed_tokens.weight[:90], text.model.embed_tokens.weight)
    assert torch.equal(model.lm_head.weight[:90], text.lm_head.weight)
    assert torch.equal(lm.layers[1].mlp.down_proj.weight, text.model.layers[1].mlp.down_proj.weight)
    enc = whisper.model.encoder
    for name, tensor in enc.state_dict().items():
        assert torch.equal(model.model.audio_tower.state_dict()[name], tensor), name
    assert torch.equal(model.speech_head.decoder.layers[0].self_attn.q_proj.weight,
                       srh.model.layers[0].self_attn.q_proj.weight)
    # The SRH vocabulary is speech, not the small LM's text vocabulary.
    assert model.speech_head.decoder.embed_tokens.num_embeddings == model.config.speech_embed_vocab_size

    tester = OmniDRCAModelTester(speech_vocab_size=32)
    inputs = tester.prepare_inputs(model.config)
    out = model(**inputs)
    assert torch.isfinite(out.loss)
    out.loss.backward()


def test_compose_keeps_tied_embeddings_and_dtype(backbones):
    root, _, tied, _, _, _ = backbones
    model = compose_from_backbones(
        str(root / "tied"), str(root / "whisper"), dtype=torch.bfloat16, codec_config=TINY_CODEC,
        srh_config=dict(model_type="qwen2", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1),
        **SPECIAL,
    )
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
    assert model.dtype == torch.bfloat16
    assert torch.equal(model.lm_head.weight.float(), tied.lm_head.weight.to(torch.bfloat16).float())


def test_compose_errors(backbones):
    root = backbones[0]
    with pytest.raises(ValueError, match="Whisper checkpoint"):
        compose_from_backbones(str(root / "text"), str(root / "text"), codec_config=TINY_CODEC)
    with pytest.raises(ValueError, match="not both"):
        compose_from_backbones(str(root / "text"), str(root / "whisper"), srh_model=str(root / "srh"),
                               srh_config={"model_type": "qwen2"})
    with pytest.raises(ValueError, match="not both"):
        compose_from_backbones(str(root / "text"), str(root / "whisper"), codec_model=str(root / "codec"),
                               codec_config=TINY_CODEC)
