"""Compose an OmniDRCA model from pretrained backbones (the paper's recipe: Qwen2.5 + Whisper encoder).

    model = OmniDRCAForConditionalGeneration.from_backbones(
        "Qwen/Qwen2.5-7B-Instruct", "openai/whisper-large-v3",
        srh_model="Qwen/Qwen2.5-0.5B", vocab_size=len(tokenizer), audio_token_id=..., ...,
        dtype=torch.bfloat16,
    )

Local folders and Hub ids both work (loading goes through `from_pretrained`). The text LM's decoder and
head, the Whisper encoder, (optionally) a small LM's decoder layers for the SRH and a trained speech
codec are copied in; the new parts (groupers, speech embeddings, SRH projections and head) start from the model's own init.
"""

from __future__ import annotations

import torch
from transformers import MODEL_MAPPING, AutoConfig, AutoModel, AutoModelForCausalLM

from .codec_omnidrca import OmniDRCASpeechCodec
from .configuration_omnidrca import OmniDRCAConfig


class OmniDRCABackbonesMixin:
    """`from_backbones` for the model class (modeling imports this module, never the other way round)."""

    @classmethod
    def from_backbones(cls, text_model: str, audio_model: str, srh_model: str | None = None, **kwargs):
        """Build OmniDRCA around pretrained backbones; see `modeling_omnidrca.compose.compose_from_backbones`."""
        return compose_from_backbones(text_model, audio_model, srh_model=srh_model, model_class=cls, **kwargs)


def compose_from_backbones(
    text_model: str,
    audio_model: str,
    srh_model: str | None = None,
    *,
    codec_model: str | None = None,
    vocab_size: int | None = None,
    dtype: torch.dtype | None = None,
    model_class: type | None = None,
    **config_kwargs,
):
    """Build an OmniDRCA model whose backbone and speech encoder carry pretrained weights.

    Args:
        text_model: folder or Hub id of a causal LM (anything `AutoModelForCausalLM` loads).
        audio_model: folder or Hub id of a Whisper checkpoint (`WhisperModel`,
            `WhisperForConditionalGeneration`); only its encoder is kept.
        srh_model: optional folder or Hub id of a small causal LM whose decoder layers initialise the
            Speech Refined Head (its token embeddings are not reused: the SRH's vocabulary is speech).
            Without it, pass `srh_config=` (a dict or config) or get the default 0.5B-sized SRH.
        codec_model: optional folder or Hub id of a trained `OmniDRCASpeechCodec`; its config sets the
            speech vocabulary. Without it, pass `codec_config=` or get an untrained default codec.
        vocab_size: grow the text embeddings and head to this size first, to make room for the
            stream-layout special tokens a tokenizer added (`len(tokenizer)`).
        dtype: dtype of the loaded weights and of the returned model (e.g. `torch.bfloat16` on GPU).
        model_class: the OmniDRCA class to build (defaults to `OmniDRCAForConditionalGeneration`).
        **config_kwargs: any other `OmniDRCAConfig` field (`group_size`, `speech_vocab_size`, token ids...).

    Peak memory is about twice the model's size: each backbone is loaded, copied in, then freed.
    """
    if model_class is None:  # the class the package registered for its config (this module never imports it)
        model_class = MODEL_MAPPING[OmniDRCAConfig]
    load_kwargs = {} if dtype is None else {"dtype": dtype}

    text_lm = AutoModelForCausalLM.from_pretrained(text_model, **load_kwargs)
    if vocab_size is not None and vocab_size != text_lm.get_input_embeddings().num_embeddings:
        text_lm.resize_token_embeddings(vocab_size)
    whisper = AutoModel.from_pretrained(audio_model, **load_kwargs)
    if not hasattr(whisper, "get_encoder") or whisper.config.model_type != "whisper":
        raise ValueError(
            f"`audio_model` must be a Whisper checkpoint (model_type 'whisper'), got {whisper.config.model_type!r} "
            f"from {audio_model!r}."
        )
    encoder = whisper.get_encoder()

    srh_lm = None
    if srh_model is not None:
        if "srh_config" in config_kwargs:
            raise ValueError("Pass either `srh_model` (weights and config) or `srh_config` (config only), not both.")
        srh_lm = AutoModel.from_pretrained(srh_model, **load_kwargs)
        config_kwargs["srh_config"] = AutoConfig.from_pretrained(srh_model)

    codec = None
    if codec_model is not None:
        if "codec_config" in config_kwargs:
            raise ValueError("Pass either `codec_model` (weights and config) or `codec_config`, not both.")
        codec = OmniDRCASpeechCodec.from_pretrained(codec_model)
        config_kwargs["codec_config"] = codec.config

    config = OmniDRCAConfig(
        text_config=text_lm.config,
        audio_config=whisper.config,
        tie_word_embeddings=bool(getattr(text_lm.config, "tie_word_embeddings", False)),
        **config_kwargs,
    )
    model = model_class(config)
    if dtype is not None:
        model = model.to(dtype)

    base = getattr(text_lm, text_lm.base_model_prefix)
    model.model.language_model.load_state_dict(base.state_dict())
    model.lm_head.load_state_dict(text_lm.get_output_embeddings().state_dict())
    model.model.audio_tower.load_state_dict(encoder.state_dict())
    if srh_lm is not None:
        srh_lm = getattr(srh_lm, srh_lm.base_model_prefix, srh_lm)
        state = {k: v for k, v in srh_lm.state_dict().items() if not k.startswith("embed_tokens.")}
        missing, unexpected = model.speech_head.decoder.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("embed_tokens.") for k in missing):
            raise ValueError(
                f"`srh_model` {srh_model!r} does not match the SRH decoder: missing {missing}, unexpected "
                f"{unexpected}. Use a causal LM of the same family as `srh_config`."
            )
    if codec is not None:
        model.speech_codec.load_state_dict(codec.state_dict())
    if config.tie_word_embeddings:
        model.tie_weights()
    model.config.name_or_path = f"omnidrca({text_model}, {audio_model})"
    return model


def replace_speech_head(model, speech_head_type: str, diffusion_config: dict | None = None, **config_kwargs):
    """A copy of `model` with another speech head, every shared part (encoder, backbone, text head,
    groupers, codec, contrastive temperature) carried over; the new head and its speech-group embedding
    start from the model's own init (e.g. switch an aligned SRH model to the diffusion head before SFT).

    Args:
        model: an `OmniDRCAForConditionalGeneration`.
        speech_head_type: `"srh"` or `"diffusion"`.
        diffusion_config: sizes and settings of the diffusion head (`OmniDRCADiffusionHeadConfig` fields).
        **config_kwargs: other `OmniDRCAConfig` fields to change (e.g. `speech_loss_weight`).
    """
    values = model.config.to_dict()
    values.update(speech_head_type=speech_head_type, **config_kwargs)
    if diffusion_config is not None:
        values["diffusion_config"] = dict(diffusion_config)
    for key in ("auto_map", "architectures", "_name_or_path", "transformers_version", "model_type"):
        values.pop(key, None)
    config = OmniDRCAConfig(**values)
    new = type(model)(config).to(model.dtype)
    head_parts = ("speech_head.", "model.speech_embed.")
    state = {k: v for k, v in model.state_dict().items() if not k.startswith(head_parts)}
    missing, unexpected = new.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(head_parts) for k in missing):
        raise ValueError(f"Speech-head switch left parts unmatched: missing {missing}, unexpected {unexpected}.")
    if config.tie_word_embeddings:
        new.tie_weights()
    return new


__all__ = ["OmniDRCABackbonesMixin", "compose_from_backbones", "replace_speech_head"]
