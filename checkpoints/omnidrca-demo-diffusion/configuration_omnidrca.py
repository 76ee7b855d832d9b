"""OmniDRCA configuration: a composite config in the style of transformers' audio-LLM configs.

The defaults describe the published system (arXiv 2506.09349): a Qwen2.5-7B-sized backbone, a
Whisper-large-v3-sized speech encoder and a Speech Refined Head the size of a 0.5B LM. Tests and the
demo use tiny sub-configs; the code path is the same.
"""

from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .configuration_codec_omnidrca import OmniDRCASpeechCodecConfig
from .speech_heads import known_speech_head_types
from .streams import StreamLayout, check_speech_read, check_text_alignment, speech_special_ids

ODE_SOLVERS = ("euler", "heun")
TIME_SAMPLINGS = ("uniform", "logit_normal")


@strict
class OmniDRCADiffusionHeadConfig(PreTrainedConfig):
    r"""
    Configuration of the diffusion speech head (`speech_head_type="diffusion"`): a small diffusion transformer
    (DiT, adaLN conditioning) that generates the k continuous codec latent frames of the next group by flow
    matching (rectified flow), conditioned on the backbone state and on the previous group's latents.

    Args:
        hidden_size (`int`, *optional*, defaults to 512):
            Width of the DiT (and of the per-frame features of the continuous speech-group embedding).
        num_hidden_layers (`int`, *optional*, defaults to 6):
            DiT blocks (bidirectional attention over the previous group's k frames and the k noisy frames).
        num_attention_heads (`int`, *optional*, defaults to 8):
            Attention heads of each block; must divide `hidden_size`.
        intermediate_size (`int`, *optional*):
            Width of the blocks' MLP. Defaults to `4 * hidden_size`.
        frequency_embedding_size (`int`, *optional*, defaults to 256):
            Sinusoidal features of the flow time before the time MLP.
        num_ode_steps (`int`, *optional*, defaults to 10):
            Integration steps from noise (t = 0) to data (t = 1) at generation. Cost is linear in it: Euler
            calls the DiT once per step, Heun twice (once more per step when guidance is on: batched).
        ode_solver (`str`, *optional*, defaults to `"euler"`):
            `"euler"` or `"heun"` (second order; the last step is a plain Euler step, as in EDM).
        guidance_scale (`float`, *optional*, defaults to 1.0):
            Classifier-free guidance at generation: v = v_uncond + scale * (v_cond - v_uncond). 1.0 turns it off
            (one DiT pass per evaluation); > 1 needs a head trained with `condition_dropout` > 0.
        condition_dropout (`float`, *optional*, defaults to 0.1):
            Training probability of replacing the backbone condition by a learned null condition (what
            classifier-free guidance extrapolates away from).
        noise_scale (`float`, *optional*, defaults to 1.0):
            Std of the initial noise when the speech stream is not sampled (`do_sample=False`; the noise then
            comes from a fixed seed, so greedy generation is deterministic). With sampling, `speech_temperature`
            sets it.
        time_sampling (`str`, *optional*, defaults to `"logit_normal"`):
            Distribution of the flow time t in training: `"uniform"` or `"logit_normal"` (SD3: sigmoid of a
            standard normal, more weight on the middle of the path).
        timesteps_per_target (`int`, *optional*, defaults to 1):
            Noise/time draws per target group in one training step (MAR's diffusion batch multiplier, 4 there).
            Each draw costs a DiT pass over every target group: worth raising on a GPU, where the small DiT is
            cheap next to the backbone; on a CPU it quickly dominates the step.
        stop_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the stop head's cross-entropy (how many frames of the next group are speech before it ends).
        special_embedding_size (`int`, *optional*, defaults to 8):
            Size of the learned per-frame vectors of the speech stream's `[bos]` / `[eos]` in the continuous
            group embedding (`[pad]` is zero).
        snap_to_codebook (`bool`, *optional*, defaults to `False`):
            Round generated latents to the codec's FSQ grid before decoding (the decoder was trained on
            quantised latents). Off: the decoder reads the continuous latents directly.
    """

    model_type = "omnidrca_diffusion_head"

    hidden_size: int = 512
    num_hidden_layers: int = 6
    num_attention_heads: int = 8
    intermediate_size: int | None = None
    frequency_embedding_size: int = 256
    num_ode_steps: int = 10
    ode_solver: str = "euler"
    guidance_scale: float | int = 1.0
    condition_dropout: float | int = 0.1
    noise_scale: float | int = 1.0
    time_sampling: str = "logit_normal"
    timesteps_per_target: int = 1
    stop_loss_weight: float | int = 1.0
    special_embedding_size: int = 8
    snap_to_codebook: bool = False

    def __post_init__(self, **kwargs):
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        super().__post_init__(**kwargs)
        if self.hidden_size < 1 or self.num_attention_heads < 1 or self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"The diffusion head's `hidden_size` ({self.hidden_size}) must be a positive multiple of "
                f"`num_attention_heads` ({self.num_attention_heads}). Use e.g. hidden_size=192, num_attention_heads=4."
            )
        if self.num_ode_steps < 1:
            raise ValueError(f"`num_ode_steps` must be >= 1, got {self.num_ode_steps}.")
        if self.ode_solver not in ODE_SOLVERS:
            raise ValueError(f"Unknown `ode_solver` {self.ode_solver!r}: expected one of {ODE_SOLVERS}.")
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"Unknown `time_sampling` {self.time_sampling!r}: expected one of {TIME_SAMPLINGS}.")
        if not 0 <= self.condition_dropout < 1:
            raise ValueError(f"`condition_dropout` must be in [0, 1), got {self.condition_dropout}.")
        if self.timesteps_per_target < 1:
            raise ValueError(f"`timesteps_per_target` must be >= 1, got {self.timesteps_per_target}.")


@strict
class OmniDRCAConfig(PreTrainedConfig):
    r"""
    Configuration of [`OmniDRCAForConditionalGeneration`].

    Args:
        text_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the causal-LM backbone (any decoder-only model `AutoModel` can build, e.g. qwen2, llama).
            Defaults to a Qwen2.5-7B-sized qwen2 config.
        audio_config (`dict` or `WhisperConfig`, *optional*):
            Config of the Whisper-style encoder of user speech (only its encoder half is instantiated).
            Defaults to Whisper-large-v3 sizes (128 mel bins, 32 layers).
        srh_config (`dict` or `PreTrainedConfig`, *optional*):
            Config of the Speech Refined Head's small causal LM, which runs over the k full-rate positions of
            one group. Its `vocab_size` is forced to the speech vocabulary (codes + special tokens).
            Defaults to a Qwen2.5-0.5B-sized qwen2 config.
        diffusion_config (`dict` or [`OmniDRCADiffusionHeadConfig`], *optional*):
            The diffusion speech head (used when `speech_head_type="diffusion"`): DiT sizes, ODE steps and
            solver, classifier-free guidance, loss settings.
        codec_config (`dict` or [`OmniDRCASpeechCodecConfig`], *optional*):
            The speech codec (`model.speech_codec`): tokenizer and detokenizer of the assistant's speech. Its
            codebook (`prod(fsq_levels)`) is the speech vocabulary. Defaults to 3^8 = 6561 codes at 25 Hz.
        group_size (`int`, *optional*, defaults to 5):
            k, the number of consecutive 25 Hz speech frames grouped into one LLM position (5 Hz for k=5).
            Applies to user speech (encoder frames) and to assistant speech (codec codes).
        speech_delay (`int`, *optional*, defaults to 2):
            How many LLM steps (groups) the assistant speech stream lags behind the text stream, so speech is
            always conditioned on text already written (2 groups = 0.4 s at k=5).
        speech_vocab_size (`int`, *optional*):
            Number of codec codes; defaults to (and must equal) the codec's codebook size. Special speech
            tokens come after them.
        speech_bos_token_id (`int`, *optional*):
            Speech-stream start token, fed while the speech stream waits out its delay.
            Defaults to `speech_vocab_size`.
        speech_eos_token_id (`int`, *optional*):
            Speech-stream end token, predicted right after the last code. Defaults to `speech_vocab_size + 1`.
        speech_pad_token_id (`int`, *optional*):
            Speech padding: positions with no speech (prompt, text-only answers, the tail of the last group).
            Its embedding is zero, so a text-only position is exactly a text-LLM position.
            Defaults to `speech_vocab_size + 2`.
        speech_head_type (`str`, *optional*, defaults to `"srh"`):
            Which speech head generates assistant speech: `"srh"` (discrete codes through the Speech Refined
            Head) or `"diffusion"` (the k continuous codec latents of each group through a small diffusion
            transformer, `diffusion_config`; the speech stream's ids then only mark where frames, `[bos]`,
            `[eos]` and `[pad]` are, and the grouped input embedding projects the k latent frames).
        audio_token_id (`int`, *optional*):
            Text id of the `<|AUDIO|>` placeholder. Each user audio clip occupies ceil(T_25Hz / k) of them.
        assistant_bos_token_id (`int`, *optional*):
            Text id of `<abos>`, the first text token of an assistant stream (forced at generation).
        assistant_eos_token_id (`int`, *optional*):
            Text id of `<aeos>`, which ends the assistant text stream.
        text_pad_token_id (`int`, *optional*):
            Text id fed after `<aeos>` while speech is still being generated (the "silence" of the text
            stream), and between the words of a spread spoken answer.
        text_alignment (`str`, *optional*, defaults to `"leading"`):
            Where a spoken answer's text tokens sit beside its speech: `"leading"` writes them back to back
            first, then pads while the speech runs; `"spread"` spreads them over the speech (`text_pad` between
            them, learned), so the text step beside a late speech group is the word being said. Text-only
            answers are leading either way (`streams.build_assistant_streams`).
        speech_read (`str`, *optional*, defaults to `"always"`):
            Where the backbone reads the speech stream. `"always"` (the paper's layout) adds every position's
            speech group to its text embedding. `"after_text"` adds it only where the text input is
            `text_pad_token_id`: with leading text, once the answer's text has ended, so the text is chosen from
            the question and its own tokens, never beside speech (`streams.gate_speech_ids`). The SRH still
            reads every code it made. Codes only (`speech_head_type="srh"`).
        speech_tracker_layers (`int`, *optional*, defaults to 0):
            Layers of the SRH's speech tracker (`speech_tracker.py`), a small causal transformer of the SRH's width
            over the answer's (text token, speech group) rows that tells the SRH where the speech has got to; it
            pairs with `speech_read="after_text"`, where the backbone no longer knows. 0: no tracker (SRH only).
        projector_hidden_act (`str`, *optional*, defaults to `"gelu"`):
            Activation of the MLP that maps a group of k encoder frames to one LLM embedding.
        speech_loss_weight (`float`, *optional*, defaults to 1.0):
            Weight of the speech loss in the total loss (text cross-entropy has weight 1): the SRH's
            cross-entropy, or the diffusion head's flow-matching MSE.
        contrastive_weight (`float`, *optional*, defaults to 0.1):
            Weight of the speech-text contrastive (symmetric InfoNCE) loss; 0 disables its contribution to
            the total loss (the component is still reported when transcripts are given).
        speech_input_noise (`float`, *optional*, defaults to 0.0):
            Training only, applied by the SRH's speech embedding (`speech_head_type="srh"`; the diffusion head's
            continuous stream refuses it): each row swaps up to this fraction (its rate drawn uniformly
            in [0, speech_input_noise]) of the codec codes the backbone *reads* for random codes; the SRH's
            teacher forcing and all targets stay clean. At generation the backbone reads its own speech, which
            is never the reference's: the noise is meant to keep the text stream from leaning on it. 0 disables it.
        contrastive_temperature (`float`, *optional*, defaults to 0.07):
            Initial temperature of the InfoNCE logits; the temperature is a learned parameter.
        tie_word_embeddings (`bool`, *optional*):
            Whether the text head shares the backbone's input embedding. Defaults to the text config's value.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Std of the normal init of the project's own layers (groupers, heads).

    Example:

    ```python
    >>> from modeling_omnidrca import OmniDRCAConfig, OmniDRCAForConditionalGeneration
    >>> config = OmniDRCAConfig(
    ...     text_config={"model_type": "qwen2", "hidden_size": 64, "num_hidden_layers": 2,
    ...                  "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
    ...                  "vocab_size": 256},
    ...     audio_config={"model_type": "whisper", "d_model": 32, "encoder_layers": 2,
    ...                   "encoder_attention_heads": 2, "encoder_ffn_dim": 64, "num_mel_bins": 80},
    ...     srh_config={"model_type": "qwen2", "hidden_size": 32, "num_hidden_layers": 1,
    ...                 "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 64},
    ...     speech_vocab_size=64, audio_token_id=250, assistant_bos_token_id=251,
    ...     assistant_eos_token_id=252, text_pad_token_id=253,
    ... )
    >>> model = OmniDRCAForConditionalGeneration(config)
    ```
    """

    model_type = "omnidrca"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="qwen2",
            init_kwargs={
                "vocab_size": 152064,
                "hidden_size": 3584,
                "intermediate_size": 18944,
                "num_hidden_layers": 28,
                "num_attention_heads": 28,
                "num_key_value_heads": 4,
                "max_position_embeddings": 32768,
                "rms_norm_eps": 1e-6,
                "tie_word_embeddings": False,
            },
        ),
        "audio_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="whisper",
            init_kwargs={
                "d_model": 1280,
                "encoder_layers": 32,
                "encoder_attention_heads": 20,
                "encoder_ffn_dim": 5120,
                "num_mel_bins": 128,
                "max_source_positions": 1500,
            },
        ),
        "codec_config": SubConfigSpec(config_class=OmniDRCASpeechCodecConfig),
        "diffusion_config": SubConfigSpec(config_class=OmniDRCADiffusionHeadConfig),
        "srh_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="qwen2",
            init_kwargs={
                "hidden_size": 896,
                "intermediate_size": 4864,
                "num_hidden_layers": 24,
                "num_attention_heads": 14,
                "num_key_value_heads": 2,
                "max_position_embeddings": 64,
                "tie_word_embeddings": False,
            },
        ),
    }

    text_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    srh_config: dict | PreTrainedConfig | None = None
    codec_config: dict | PreTrainedConfig | None = None
    diffusion_config: dict | PreTrainedConfig | None = None
    group_size: int = 5
    speech_delay: int = 2
    speech_vocab_size: int | None = None
    speech_bos_token_id: int | None = None
    speech_eos_token_id: int | None = None
    speech_pad_token_id: int | None = None
    speech_head_type: str = "srh"
    audio_token_id: int | None = None
    assistant_bos_token_id: int | None = None
    assistant_eos_token_id: int | None = None
    text_pad_token_id: int | None = None
    text_alignment: str = "leading"
    speech_read: str = "always"
    speech_tracker_layers: int = 0
    projector_hidden_act: str = "gelu"
    speech_loss_weight: float | int = 1.0
    contrastive_weight: float | int = 0.1
    contrastive_temperature: float | int = 0.07
    speech_input_noise: float | int = 0.0
    tie_word_embeddings: bool | None = None
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        codebook = self.codec_config.codebook_size
        if self.speech_vocab_size is None:
            self.speech_vocab_size = codebook
        elif self.speech_vocab_size != codebook:
            raise ValueError(
                f"`speech_vocab_size`={self.speech_vocab_size} does not match the codec's codebook of {codebook} codes "
                f"(fsq_levels {list(self.codec_config.fsq_levels)}). Leave speech_vocab_size unset, or choose "
                "codec fsq_levels whose product is the vocabulary you want."
            )
        self.speech_bos_token_id, self.speech_eos_token_id, self.speech_pad_token_id = speech_special_ids(
            self.speech_vocab_size, self.speech_bos_token_id, self.speech_eos_token_id, self.speech_pad_token_id
        )
        if self.tie_word_embeddings is None:
            self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))
        # The SRH's token embedding *is* the speech vocabulary: keep them in sync whatever the user passed.
        self.srh_config.vocab_size = self.speech_embed_vocab_size
        self.srh_config.tie_word_embeddings = False
        # Top-level hidden_size lets DeepSpeed/accelerate "auto" settings see the backbone width.
        self.hidden_size = self.text_config.hidden_size
        self.validate_omnidrca()

    def validate_omnidrca(self) -> None:
        """Raise a `ValueError` naming the field, the value received and what is expected."""
        if not isinstance(self.group_size, int) or self.group_size < 1:
            raise ValueError(f"`group_size` (k) must be a positive int, got {self.group_size!r}. Use 5 for 25 Hz -> 5 Hz.")
        if not isinstance(self.speech_delay, int) or self.speech_delay < 0:
            raise ValueError(f"`speech_delay` must be an int >= 0 (in groups), got {self.speech_delay!r}.")
        check_text_alignment(self.text_alignment)
        check_speech_read(self.speech_read)
        if self.speech_read != "always" and (self.speech_head_type == "diffusion" or self.text_pad_token_id is None):
            raise ValueError(f"`speech_read={self.speech_read!r}` swaps speech codes for `[pad]` where the text input is "
                             f"`text_pad_token_id` ({self.text_pad_token_id}): it needs that id and the SRH's discrete "
                             f"codes (speech_head_type={self.speech_head_type!r}). Use speech_read='always'.")
        if not isinstance(self.speech_tracker_layers, int) or self.speech_tracker_layers < 0:
            raise ValueError(f"`speech_tracker_layers` must be an int >= 0, got {self.speech_tracker_layers!r}; 0 has no tracker.")
        if self.speech_tracker_layers and (self.speech_head_type != "srh" or self.assistant_bos_token_id is None):
            raise ValueError(f"`speech_tracker_layers={self.speech_tracker_layers}` adds a tracker to the SRH, which "
                             f"finds each answer by `assistant_bos_token_id` ({self.assistant_bos_token_id}): it needs "
                             f"speech_head_type='srh' (got {self.speech_head_type!r}) and that id. Set it to 0.")
        if self.speech_vocab_size < 2:
            raise ValueError(f"`speech_vocab_size` must be >= 2 codec codes, got {self.speech_vocab_size}.")
        if self.speech_head_type not in known_speech_head_types():
            raise ValueError(
                f"Unknown `speech_head_type` {self.speech_head_type!r}: expected one of {known_speech_head_types()}. "
                "Use 'srh' for discrete codec codes (Speech Refined Head) or 'diffusion' for continuous latents "
                "(or register your own head with `register_speech_head`)."
            )
        if not 0 <= self.speech_input_noise < 1:
            raise ValueError(f"`speech_input_noise` must be in [0, 1), got {self.speech_input_noise!r}; 0 disables it.")
        if self.speech_input_noise > 0 and self.speech_head_type == "diffusion":
            raise ValueError(
                "`speech_input_noise` swaps discrete codec codes; the diffusion head reads continuous latents. "
                "Set it to 0 for speech_head_type='diffusion'."
            )
        specials = {
            "speech_bos_token_id": self.speech_bos_token_id,
            "speech_eos_token_id": self.speech_eos_token_id,
            "speech_pad_token_id": self.speech_pad_token_id,
        }
        for name, value in specials.items():
            if value < self.speech_vocab_size:
                raise ValueError(
                    f"`{name}`={value} collides with codec codes 0..{self.speech_vocab_size - 1}; special speech "
                    f"tokens must be >= speech_vocab_size ({self.speech_vocab_size}). Leave it unset for the default."
                )
        if len(set(specials.values())) != len(specials):
            raise ValueError(f"Special speech token ids must be distinct, got {specials}.")
        if self.audio_config.model_type != "whisper":
            raise ValueError(
                f"`audio_config` must be a Whisper-style config (model_type 'whisper'), got "
                f"{self.audio_config.model_type!r}. Pass e.g. WhisperConfig.from_pretrained('openai/whisper-small')."
            )
        vocab = self.text_config.vocab_size
        for name in ("audio_token_id", "assistant_bos_token_id", "assistant_eos_token_id", "text_pad_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < vocab:
                raise ValueError(
                    f"`{name}`={value} is outside the text vocabulary (0..{vocab - 1}). Add the special tokens to "
                    "the tokenizer, resize the text embeddings, then set the ids."
                )

    @property
    def speech_embed_vocab_size(self) -> int:
        """Rows of the speech embedding tables: codec codes plus the special speech tokens."""
        return max(self.speech_vocab_size, self.speech_bos_token_id, self.speech_eos_token_id, self.speech_pad_token_id) + 1

    @property
    def stream_layout(self) -> StreamLayout:
        """The parallel-stream layout (k, delay, forced and padding ids) as one typed, frozen object."""
        return StreamLayout.from_fields(self)


__all__ = ["OmniDRCAConfig", "OmniDRCADiffusionHeadConfig"]
