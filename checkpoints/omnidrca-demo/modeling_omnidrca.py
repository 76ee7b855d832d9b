"""OmniDRCA: a parallel speech-text model with dual-resolution speech and contrastive alignment.

Data flow (DESIGN.md §2): user speech -> log-mel -> Whisper-style encoder (50 Hz) -> avg-pool (25 Hz)
-> group k frames (5 Hz) -> placed at the prompt's <|AUDIO|> slots. In an assistant turn every LLM
position is E_text(x_t) + Group(E_speech(s_t,1..k)); from its hidden state the text head predicts
x_{t+1} and the Speech Refined Head (SRH) ungroups it into the k 25 Hz codes of s_{t+1}.

Shape legend:
    B  batch                      L   LLM positions (5 Hz over speech for k=5)
    N  user audio clips           M   mel bins            F   mel frames (100 Hz)
    T50, T25  encoder frames at 50 Hz / after pooling to 25 Hz
    G  groups of one clip (ceil(T25 / k))                 k   group size
    D  backbone width             Da  audio encoder width  Ds  SRH width
    Vt text vocab                 Vs  speech vocab (codes + bos/eos/pad)
    P  LLM positions that carry a speech target               d   codec latent dim (diffusion head)

With `speech_head_type="diffusion"` the speech stream is continuous: `speech_ids` keep the discrete layout
(they mark latent frames, [bos], [eos], [pad]) and `speech_latents` (B, L, k, d) carry the codec latents of
the frames; the head is the small DiT of `diffusion_head.py` (flow matching) plus a stop head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPooling, ModelOutput
from transformers.models.whisper.modeling_whisper import WhisperEncoder, sinusoids
from transformers.utils import can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.import_utils import torch_compilable_check

from .assembly import ExternalWeightsMixin  # parts-only folders (`external_weights`) are assembled on load
from .codec_omnidrca import OmniDRCASpeechCodec
from .compose import OmniDRCABackbonesMixin
from .configuration_omnidrca import OmniDRCAConfig
from .diffusion_head import OmniDRCADiffusionHead  # noqa: F401  (registers speech_head_type="diffusion")
from .generation_omnidrca import OmniDRCAGenerationMixin
from .speech_head_srh import OmniDRCASpeechEmbedding, OmniDRCASpeechRefinedHead  # noqa: F401  (registers "srh")
from .speech_heads import speech_head_class
from .streams import IGNORE_INDEX, gate_speech_ids


@dataclass
class OmniDRCAAudioFeatures(BaseModelOutputWithPooling):
    """User speech after the encoder and the grouper (transformers' `get_audio_features` contract).

    last_hidden_state: (N, T50, Da) encoder output; pooler_output: (N, G_max, D) grouped 5 Hz embeddings, zero past
    each clip's end; hidden_states / attentions: per encoder layer, when requested.
    """

    mask: torch.BoolTensor | None = None  # (N, G_max) True on the groups of each clip


@dataclass
class OmniDRCAModelOutputWithPast(ModelOutput):
    last_hidden_state: torch.FloatTensor | None = None  # (B, L, D)
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None  # each (B, L, D)
    attentions: tuple[torch.FloatTensor, ...] | None = None  # each (B, heads, L, L)
    audio_embeds: torch.FloatTensor | None = None  # (N, G_max, D) grouped user speech, when audio was given
    audio_embeds_mask: torch.BoolTensor | None = None  # (N, G_max)


@dataclass
class OmniDRCAOutput(ModelOutput):
    loss: torch.FloatTensor | None = None  # () text + speech_loss_weight·speech + contrastive_weight·contrastive (+ stop)
    text_loss: torch.FloatTensor | None = None  # () next-text-token cross-entropy
    speech_loss: torch.FloatTensor | None = None  # () SRH cross-entropy over the 25 Hz targets, or flow-matching MSE
    contrastive_loss: torch.FloatTensor | None = None  # () symmetric InfoNCE speech <-> transcript
    logits: torch.FloatTensor | None = None  # (B, L, Vt), or the last `logits_to_keep` positions
    speech_logits: torch.FloatTensor | None = None  # (P, k, Vs) for the P positions with speech targets
    cache: Cache | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None  # each (B, L, D)
    attentions: tuple[torch.FloatTensor, ...] | None = None
    stop_loss: torch.FloatTensor | None = None  # () diffusion head: stop-head cross-entropy (weight in diffusion_config)


class OmniDRCAAudioProjector(nn.Module):
    """Dual resolution, input side: k consecutive 25 Hz encoder frames become one LLM embedding."""

    def __init__(self, config: OmniDRCAConfig):
        super().__init__()
        self.group_size = config.group_size
        audio_dim, text_dim = config.audio_config.d_model, config.text_config.hidden_size
        self.linear_1 = nn.Linear(self.group_size * audio_dim, text_dim)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(text_dim, text_dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        n, t25, da = frames.shape  # (N, T25, Da)
        groups = math.ceil(t25 / self.group_size)
        frames = F.pad(frames, (0, 0, 0, groups * self.group_size - t25))  # zero-fill the last group
        grouped = frames.reshape(n, groups, self.group_size * da)  # (N, G, k·Da)
        return self.linear_2(self.act(self.linear_1(grouped)))  # (N, G, D)


class OmniDRCAPreTrainedModel(ExternalWeightsMixin, PreTrainedModel):
    config: OmniDRCAConfig
    config_class = OmniDRCAConfig
    base_model_prefix = "model"
    input_modalities = ("audio", "text")
    output_modalities = ("text", "audio")
    supports_gradient_checkpointing = True
    _no_split_modules = ["WhisperEncoderLayer"]
    _skip_keys_device_placement = ["cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _keep_in_fp32_modules_strict = ["embed_positions"]

    def save_pretrained(self, save_directory, *args, **kwargs):
        # custom_object_save records one auto class per model class; the omni-model class used by
        # transformers' any-to-any pipeline must resolve to the same code.
        if self.is_remote_code():
            target = f"{type(self).__module__.split('.')[-1]}.{type(self).__name__}"
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), "AutoModelForMultimodalLM": target}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, OmniDRCAForConditionalGeneration):
            init.constant_(module.contrastive_logit_scale, math.log(1.0 / self.config.contrastive_temperature))
        elif hasattr(module, "_init_own_weights"):  # speech-head modules with their own init (see the heads)
            module._init_own_weights(self.config.initializer_range)


class OmniDRCAModel(OmniDRCAPreTrainedModel):
    """The backbone with its input side: audio tower, audio grouper, speech-group embedding, and the
    decoder-only text LM (`language_model`, built with `AutoModel`, so any causal-LM family works).
    Returns `last_hidden_state`; the heads live on [`OmniDRCAForConditionalGeneration`]."""

    def __init__(self, config: OmniDRCAConfig):
        super().__init__(config)
        self.audio_tower = WhisperEncoder(config.audio_config)
        # `_keep_in_fp32_modules_strict`: fp32 whatever dtype the model is built in (`_from_config(dtype=...)`).
        # The tower (a sub-model, initialised by its own `_init_weights`) wrote its sinusoids in the build dtype;
        # rewrite them in fp32 so an fp16 build does not keep fp16-rounded positions.
        positions = self.audio_tower.embed_positions.float().weight
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float32)
        try:
            init.copy_(positions, sinusoids(*positions.shape))
        finally:
            torch.set_default_dtype(previous)
        self.multi_modal_projector = OmniDRCAAudioProjector(config)
        self.speech_embed = speech_head_class(config.speech_head_type).embedding_class(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    @can_return_tuple
    def get_audio_features(
        self,
        input_features: torch.FloatTensor,
        feature_attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> OmniDRCAAudioFeatures | tuple:
        """Encode user speech into grouped 5 Hz embeddings.

        Clips of different lengths are padded to the longest; `feature_attention_mask` marks the real
        mel frames. Padding is masked in attention and zeroed before every convolution, so a clip gets
        the same embeddings alone or in a padded batch.

        Args:
            input_features: (N, M, F) log-mel, 100 Hz frames.
            feature_attention_mask: (N, F), 1 on real frames. `None` means every frame is real.
            output_hidden_states / output_attentions: also return the encoder's per-layer states / attention maps
                (default: the config's setting).
        Returns:
            [`OmniDRCAAudioFeatures`]: `pooler_output` (N, G_max, D) grouped embeddings and `mask` (N, G_max).
        """
        tower = self.audio_tower
        if input_features.dim() != 3 or input_features.shape[1] != tower.config.num_mel_bins:
            raise ValueError(
                f"`input_features` must have shape (num_clips, {tower.config.num_mel_bins}, frames), got "
                f"{tuple(input_features.shape)}. Compute them with the model's feature extractor."
            )
        n, _, frames = input_features.shape
        max_frames = 2 * tower.config.max_source_positions
        if frames > max_frames:
            raise ValueError(
                f"Audio of {frames} mel frames ({frames / 100:.1f} s) exceeds the encoder's maximum of {max_frames} "
                f"({max_frames / 100:.0f} s). Split the audio into shorter clips."
            )
        if feature_attention_mask is None:
            lengths = torch.full((n,), frames, dtype=torch.long, device=input_features.device)
        else:
            if feature_attention_mask.shape != (n, frames):
                raise ValueError(
                    f"`feature_attention_mask` must have shape {(n, frames)} like the features, got "
                    f"{tuple(feature_attention_mask.shape)}."
                )
            lengths = feature_attention_mask.sum(-1).long()
        dtype = tower.conv1.weight.dtype
        valid100 = torch.arange(frames, device=lengths.device) < lengths[:, None]  # (N, F)
        x = input_features.to(dtype) * valid100[:, None, :]
        x = F.gelu(tower.conv1(x)) * valid100[:, None, :]  # (N, Da, F)
        x = F.gelu(tower.conv2(x)).transpose(1, 2)  # (N, T50, Da)
        t50 = x.shape[1]
        len50 = (lengths - 1) // 2 + 1
        valid50 = torch.arange(t50, device=x.device) < len50[:, None]  # (N, T50)
        x = x + tower.embed_positions.weight[:t50].to(x.dtype)
        attn_mask = torch.zeros(n, 1, 1, t50, dtype=x.dtype, device=x.device)  # (N, 1, 1, T50) additive
        attn_mask = attn_mask.masked_fill(~valid50[:, None, None, :], torch.finfo(x.dtype).min)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states or tower.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions or tower.config.output_attentions
        hidden_states, attentions = (x,) if output_hidden_states else None, [] if output_attentions else None
        # The layers run here, not in WhisperEncoder.forward (which cannot mask padded frames), so attention maps
        # are read off each layer's attention module the way transformers' output recorder does.
        hooks = [layer.self_attn.register_forward_hook(lambda m, i, out: attentions.append(out[1]))
                 for layer in tower.layers] if output_attentions else []
        try:
            for layer in tower.layers:
                x = layer(x, attn_mask)
                hidden_states = hidden_states + (x,) if output_hidden_states else None
        finally:
            for hook in hooks:
                hook.remove()
        x = tower.layer_norm(x)  # (N, T50, Da)
        encoded = x
        # 50 Hz -> 25 Hz, the rate of the assistant's speech tokens (as Qwen2-Audio pools its encoder).
        x = F.avg_pool1d(x.transpose(1, 2), kernel_size=2, stride=2).transpose(1, 2)  # (N, T25, Da)
        len25 = len50 // 2
        valid25 = torch.arange(x.shape[1], device=x.device) < len25[:, None]  # (N, T25)
        embeds = self.multi_modal_projector(x * valid25[..., None])  # (N, G_max, D)
        groups = torch.div(len25 + self.config.group_size - 1, self.config.group_size, rounding_mode="floor")
        mask = torch.arange(embeds.shape[1], device=x.device) < groups[:, None]  # (N, G_max)
        return OmniDRCAAudioFeatures(
            last_hidden_state=encoded,
            pooler_output=embeds * mask[..., None],
            hidden_states=hidden_states,
            attentions=None if attentions is None else tuple(attentions),
            mask=mask,
        )

    def get_placeholder_mask(self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor) -> torch.BoolTensor:
        """(B, L) audio slots: from the ids, or, for a prompt given as embeddings, where they embed the audio token."""
        if input_ids is not None:
            return input_ids == self.config.audio_token_id
        audio_token = torch.tensor(self.config.audio_token_id, device=inputs_embeds.device)
        return (inputs_embeds == self.get_input_embeddings()(audio_token).to(inputs_embeds.dtype)).all(-1)

    def embed_prompt(
        self,
        input_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        input_features: torch.FloatTensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, L, D) input embeddings of a prompt with its audio placed at the slots, as `forward` builds them
        (generation starts from these for prompts given as embeddings, several samples per prompt, or no cache)."""
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if input_features is not None:
            inputs_embeds, _ = self._merge_audio(input_ids, inputs_embeds, input_features, feature_attention_mask)
        return inputs_embeds

    def _merge_audio(self, input_ids, inputs_embeds, input_features, feature_attention_mask):
        audio = self.get_audio_features(input_features, feature_attention_mask, return_dict=True)
        slots = self.get_placeholder_mask(input_ids, inputs_embeds)  # (B, L)
        # torch_compilable_check: a plain `if` on these counts would break torch.export / fullgraph compile.
        torch_compilable_check(slots.sum() == audio.mask.sum(), lambda: self._slot_error(slots, audio.mask))
        source = audio.pooler_output[audio.mask].to(inputs_embeds.dtype)  # (sum of G, D) in slot order
        return inputs_embeds.masked_scatter(slots[..., None].expand_as(inputs_embeds), source), audio

    def _slot_error(self, slots: torch.Tensor, audio_mask: torch.Tensor) -> str:
        per_clip = audio_mask.sum(-1).tolist()
        return (
            f"The prompt has {int(slots.sum())} audio slots (token id {self.config.audio_token_id}) but the "
            f"{len(per_clip)} audio clip(s) need {sum(per_clip)} = {per_clip} (ceil(T_25Hz / k) with "
            f"k={self.config.group_size}). Build the prompt with the model's processor, whose group_size "
            "must equal the model's, and pass the audio that belongs to it."
        )

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        input_features: torch.FloatTensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        speech_ids: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        speech_latents: torch.FloatTensor | None = None,
        **kwargs,
    ) -> OmniDRCAModelOutputWithPast:
        r"""
        Args:
            input_ids: (B, L) text stream; user audio sits at `config.audio_token_id` slots.
            input_features: (N, M, F) log-mel of the N user clips, in slot order.
            feature_attention_mask: (N, F) real-frame mask of `input_features`.
            speech_ids: (B, L, k) speech stream aligned with `input_ids` (pad id where there is no speech).
            speech_latents: (B, L, k, d) diffusion head only: the codec latents (`encode_continuous`, not
                normalised) of the frames that `speech_ids` mark with codes; anything elsewhere.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` and `inputs_embeds`.")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)  # (B, L, D)

        audio = None
        if input_features is not None:
            inputs_embeds, audio = self._merge_audio(input_ids, inputs_embeds, input_features, feature_attention_mask)
        elif input_ids is not None and self.config.audio_token_id is not None and (
            cache is None or cache.get_seq_length() == 0  # a prefill: every slot needs its audio
        ):
            torch_compilable_check(
                ~(input_ids == self.config.audio_token_id).any(),
                "`input_ids` contain audio slots but no `input_features` were given. Pass the audio features "
                "returned by the processor together with the ids.",
            )

        if speech_ids is not None:
            k = self.config.group_size
            if speech_ids.dim() != 3 or speech_ids.shape[:2] != inputs_embeds.shape[:2] or speech_ids.shape[2] != k:
                raise ValueError(
                    f"`speech_ids` must have shape (batch, seq_len, group_size) = {(*inputs_embeds.shape[:2], k)}, "
                    f"got {tuple(speech_ids.shape)}. Group the 25 Hz speech stream by k={k} (the config's "
                    "group_size), aligned with `input_ids`."
                )
            speech_embeds = self.speech_embed(gate_speech_ids(self.config, input_ids, speech_ids), speech_latents)
            inputs_embeds = inputs_embeds + speech_embeds.to(inputs_embeds.dtype)

        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )
        return OmniDRCAModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            audio_embeds=None if audio is None else audio.pooler_output,
            audio_embeds_mask=None if audio is None else audio.mask,
        )


class OmniDRCAForConditionalGeneration(OmniDRCAPreTrainedModel, OmniDRCAGenerationMixin, OmniDRCABackbonesMixin):
    """OmniDRCA with its heads: `lm_head` (text) and `speech_head` (the SRH, or the diffusion head with
    `speech_head_type="diffusion"`), the frozen `speech_codec`
    that turns speech codes into waveforms (at `speech_codec.config.sampling_rate`), and the contrastive
    speech-text alignment loss. `model` is the [`OmniDRCAModel`] backbone (TRL/PEFT reach the LM
    through `model.language_model` and `lm_head`)."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    # Tied to the embedding, which the text backbone's plan shards: the head must be sharded with it.
    _tp_plan = {"lm_head": "colwise_gather_output"}
    # The loss mixes text, speech and contrastive terms: the Trainer must not rescale it by a
    # text-token count (`num_items_in_batch`), so it is not accepted as a loss kwarg.
    accepts_loss_kwargs = False

    def __init__(self, config: OmniDRCAConfig):
        super().__init__(config)
        head_class = speech_head_class(config.speech_head_type)  # the one place the head type is looked up
        self.model = OmniDRCAModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.speech_head = head_class(config)
        # Speech tokenizer/detokenizer. Trained on its own (training/), then frozen: LM training must not
        # move the code space its targets were computed in.
        self.speech_codec = OmniDRCASpeechCodec(config.codec_config)
        self.speech_codec.requires_grad_(False)
        # CLIP-style learnable temperature of the contrastive loss, stored as log(1 / T).
        self.contrastive_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.contrastive_temperature)))
        self.post_init()

    def train(self, mode: bool = True):
        super().train(mode)
        self.speech_codec.eval()  # frozen: no train-mode behaviour either
        return self

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    def get_audio_features(self, *args, **kwargs) -> OmniDRCAAudioFeatures | tuple:
        return self.model.get_audio_features(*args, **kwargs)

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        input_features: torch.FloatTensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        speech_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        speech_labels: torch.LongTensor | None = None,
        transcript_ids: torch.LongTensor | None = None,
        transcript_attention_mask: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        speech_latents: torch.FloatTensor | None = None,
        **kwargs,
    ) -> OmniDRCAOutput:
        r"""
        Args:
            input_ids: (B, L) text stream (prompt, then the assistant stream of `streams.build_assistant_streams`).
            input_features / feature_attention_mask: (N, M, F) / (N, F) log-mel of the user clips.
            speech_ids: (B, L, k) speech stream aligned with `input_ids`.
            labels: (B, L) text targets, unshifted; -100 = ignored.
            speech_labels: (B, L, k) speech targets, unshifted; -100 = ignored. Needs `speech_ids`
                (the SRH is teacher-forced on them).
            transcript_ids / transcript_attention_mask: (N, Lt) the transcript of each user clip; when
                given, the contrastive loss aligns each clip's pooled grouped embedding with the pooled
                text embedding of its transcript against the other clips of the batch.
            logits_to_keep: compute text logits for the last `logits_to_keep` positions only (0 = all).
            speech_latents: (B, L, k, d) diffusion head only: the codec latents of the speech frames (inputs
                and, at the frames of `speech_labels`, flow-matching targets).
        """
        if labels is not None and input_ids is not None and labels.shape != input_ids.shape:
            raise ValueError(
                f"`labels` must have the shape of `input_ids` {tuple(input_ids.shape)}, got {tuple(labels.shape)}. "
                "Labels are unshifted, one per position (-100 where no loss is wanted)."
            )
        if speech_labels is not None:
            if speech_ids is None:
                raise ValueError(
                    "`speech_labels` need `speech_ids`: the SRH is teacher-forced on the speech stream. Pass both "
                    "(`streams.build_assistant_streams` returns both)."
                )
            if speech_labels.shape != speech_ids.shape:
                raise ValueError(
                    f"`speech_labels` must have the shape of `speech_ids` {tuple(speech_ids.shape)}, got "
                    f"{tuple(speech_labels.shape)}."
                )
        if transcript_ids is not None and input_features is None:
            raise ValueError("`transcript_ids` are the transcripts of the user audio: pass `input_features` too.")

        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            input_features=input_features,
            feature_attention_mask=feature_attention_mask,
            speech_ids=speech_ids,
            use_cache=use_cache,
            return_dict=True,
            **({} if speech_latents is None else {"speech_latents": speech_latents}),
            **kwargs,
        )
        hidden = outputs.last_hidden_state  # (B, L, D)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep])  # (B, L', Vt)

        text_loss = speech_loss = contrastive_loss = speech_logits = stop_loss = None
        if labels is not None:
            full_logits = logits if logits.shape[1] == hidden.shape[1] else self.lm_head(hidden)
            text_loss = self._text_loss(full_logits, labels)
        head_loss = None
        if speech_labels is not None:
            text = dict(text_ids=input_ids, text_embed=self.get_input_embeddings())  # a head that `reads_text`
            head_loss = self.speech_head.loss(hidden, speech_ids, speech_labels, speech_latents, self.model.speech_embed,
                                              **(text if getattr(self.speech_head, "reads_text", False) else {}))
            speech_loss, speech_logits, stop_loss = head_loss.loss, head_loss.logits, head_loss.stop_loss
        if transcript_ids is not None:
            contrastive_loss = self._contrastive_loss(
                outputs.audio_embeds, outputs.audio_embeds_mask, transcript_ids, transcript_attention_mask
            )

        terms = [
            (text_loss, 1.0),
            (speech_loss, self.config.speech_loss_weight),
            (contrastive_loss, self.config.contrastive_weight),
        ]
        if stop_loss is not None:
            terms.append((stop_loss, head_loss.stop_weight))
        present = [weight * value for value, weight in terms if value is not None]
        loss = torch.stack(present).sum() if present else None
        return OmniDRCAOutput(
            loss=loss,
            text_loss=text_loss,
            speech_loss=speech_loss,
            contrastive_loss=contrastive_loss,
            logits=logits,
            speech_logits=speech_logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            stop_loss=stop_loss,
        )

    def _text_loss(self, logits: torch.Tensor, labels: torch.LongTensor) -> torch.Tensor:
        """Next-token cross-entropy over the positions that have a target."""
        targets = labels[:, 1:].to(logits.device)  # (B, L-1)
        selected = targets != IGNORE_INDEX
        if not bool(selected.any()):
            return logits.sum() * 0.0  # zero, but still part of the graph
        return F.cross_entropy(logits[:, :-1][selected].float(), targets[selected])  # (n, Vt) vs (n,)

    @torch.no_grad()
    def set_speech_latent_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the per-dimension mean and std of the codec's continuous latents (diffusion head), saved with
        the checkpoint. Compute them over the training corpus's answer audio (`speech_latent_stats`)."""
        embed = self.model.speech_embed
        if not hasattr(embed, "latent_mean"):
            raise ValueError(
                "Latent statistics belong to a continuous speech head (expected speech_head_type='diffusion', got "
                f"{self.config.speech_head_type!r}); this model's speech stream is discrete codes."
            )
        mean, std = torch.as_tensor(mean).float(), torch.as_tensor(std).float()
        if mean.shape != embed.latent_mean.shape or std.shape != embed.latent_std.shape or bool((std <= 0).any()):
            raise ValueError(
                f"Expected mean and std of shape {tuple(embed.latent_mean.shape)} (the codec's latent_dim) with "
                f"std > 0, got {tuple(mean.shape)} and {tuple(std.shape)} (min std {float(std.min()):.3g})."
            )
        embed.latent_mean.copy_(mean)
        embed.latent_std.copy_(std)

    def latents_to_waveform(self, latents: torch.Tensor, lengths: torch.LongTensor) -> torch.Tensor:
        """(B, T, d) codec latents and (B,) frame counts -> (B, T·samples_per_code) wave (silent past each
        row's frames); snapped to the FSQ grid first when `diffusion_config.snap_to_codebook` is set."""
        codec = self.speech_codec
        mask = (torch.arange(latents.shape[1], device=latents.device) < lengths[:, None]).long()  # (B, T)
        if self.config.diffusion_config.snap_to_codebook:
            latents = codec.quantizer.codes_to_latents(codec.quantizer.latents_to_codes(latents), latents.dtype)
        return codec.decode_continuous(latents, mask).float()

    def _contrastive_loss(
        self,
        audio_embeds: torch.Tensor,
        audio_mask: torch.BoolTensor,
        transcript_ids: torch.LongTensor,
        transcript_attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Symmetric InfoNCE (CLIP-style) between pooled grouped speech and pooled transcript embeddings.

        Both sides live in the backbone's input space, so speech is pulled towards how the LLM already
        reads the same words. Negatives are the other clips of the batch; with one clip the loss is 0.
        """
        n = audio_embeds.shape[0]
        if transcript_ids.dim() != 2 or transcript_ids.shape[0] != n:
            raise ValueError(
                f"`transcript_ids` must have shape (num_audio_clips={n}, length): one transcript per clip, got "
                f"{tuple(transcript_ids.shape)}."
            )
        if transcript_attention_mask is None:
            transcript_attention_mask = torch.ones_like(transcript_ids)
        text_mask = transcript_attention_mask.to(audio_embeds.device, audio_embeds.dtype)[..., None]  # (N, Lt, 1)
        text = self.get_input_embeddings()(transcript_ids.to(audio_embeds.device))  # (N, Lt, D)
        text = (text * text_mask).sum(1) / text_mask.sum(1).clamp(min=1.0)  # (N, D)
        audio_mask = audio_mask[..., None].to(audio_embeds.dtype)  # (N, G, 1)
        audio = (audio_embeds * audio_mask).sum(1) / audio_mask.sum(1).clamp(min=1.0)  # (N, D)
        scale = self.contrastive_logit_scale.clamp(max=math.log(100.0)).exp()
        sim = scale * F.normalize(audio.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T  # (N, N)
        target = torch.arange(n, device=sim.device)
        return (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2



__all__ = [
    "OmniDRCAAudioFeatures",
    "OmniDRCAModelOutputWithPast",
    "OmniDRCAOutput",
    "OmniDRCAPreTrainedModel",
    "OmniDRCAModel",
    "OmniDRCAForConditionalGeneration",
]
