"""How a generation session is set up: the sampling settings of both streams (one dataclass instead of
`generate`'s many keyword arguments), the checked prompt batch, and the KV-cache merge that lets rows join a
running session (see `generation_session`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from transformers import GenerationConfig
from transformers.cache_utils import Cache
from transformers.generation.logits_process import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from .generation_outputs import (
    StandardGenerateOptions,
    check_prompt,
    pop_standard_options,
)

GENERATION_MODES = ("text", "audio")
DEFAULT_MAX_NEW_TOKENS = 256  # 5 Hz steps: 51 s of answer at k=5


@dataclass
class StreamSampling:
    """How one stream picks its next token; `do_sample=False` is greedy (repetition penalty still applies)."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None

    def processors(self) -> LogitsProcessorList:
        out = LogitsProcessorList()
        if self.repetition_penalty is not None and self.repetition_penalty != 1.0:
            out.append(RepetitionPenaltyLogitsProcessor(self.repetition_penalty))
        if self.do_sample:
            if self.temperature != 1.0:
                out.append(TemperatureLogitsWarper(self.temperature))
            if self.top_k:
                out.append(TopKLogitsWarper(self.top_k))
            if self.top_p is not None and self.top_p < 1.0:
                out.append(TopPLogitsWarper(self.top_p))
        return out


class StreamStep(NamedTuple):
    """One answer row as it is produced (the streaming interface is built on these)."""

    text_ids: torch.LongTensor  # (B,) text token of this row
    speech_ids: torch.LongTensor | None  # (B, k) speech group of this row; None in text mode
    speech_latents: torch.FloatTensor | None = None  # (B, k, d) diffusion head: the group's codec latents


def _pick(value, config: GenerationConfig, name: str, default):
    if value is not None:
        return value
    stored = getattr(config, name, None)
    return default if stored is None else stored


def choose_tokens(
    logits: torch.Tensor,
    history: torch.LongTensor,
    processors: LogitsProcessorList,
    do_sample: bool,
    generator: torch.Generator | None,
) -> tuple[torch.LongTensor, torch.Tensor]:
    """(n, V) logits -> (n,) tokens and the (n, V) scores they were picked from, after the logits processors have
    seen `history` (n, h)."""
    scores = processors(history, logits.float())
    if do_sample:
        probs = torch.softmax(scores, dim=-1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1), scores
    return scores.argmax(-1), scores


_UNSUPPORTED = (
    "OmniDRCA's generate takes the processor's inputs (or `inputs_embeds`), generation_mode, max_new_tokens, the "
    "sampling controls of each stream (do_sample, temperature, top_k, top_p, repetition_penalty and their speech_* "
    "versions), seed/generator, return_waveform, logits processors, a streamer, and transformers' min_new_tokens, "
    "bad_words_ids, num_return_sequences, use_cache, return_dict_in_generate and output_* flags."
)


@dataclass
class GenerationSettings:
    """Everything a session needs to know about how to generate, resolved once from `generate`'s arguments, the
    generation config and the model config (arguments win, then `generation_config`, then the defaults)."""

    mode: str  # "text" or "audio"
    max_new_tokens: int | None  # answer rows per conversation; None: from `max_length` once the prompt is known
    max_length: int | None  # transformers' prompt + answer limit, used when `max_new_tokens` is not given
    text: StreamSampling
    speech: StreamSampling
    flow: dict | None  # diffusion head only: num_steps / solver / guidance_scale of the ODE
    text_processors: LogitsProcessorList
    speech_processors: LogitsProcessorList
    options: StandardGenerateOptions
    output_logits: bool
    return_waveform: bool
    seed: int | None = None
    generator: torch.Generator | None = None

    @property
    def speech_mode(self) -> bool:
        return self.mode == "audio"

    @classmethod
    def resolve(
        cls,
        model: Any,
        generation_mode: str = "text",
        max_new_tokens: int | None = None,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        speech_do_sample: bool | None = None,
        speech_temperature: float | None = None,
        speech_top_k: int | None = None,
        speech_top_p: float | None = None,
        speech_repetition_penalty: float | None = None,
        speech_ode_steps: int | None = None,
        speech_ode_solver: str | None = None,
        speech_guidance_scale: float | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        return_waveform: bool | None = None,
        output_logits: bool | None = None,
        logits_processor: Iterable | None = None,
        speech_logits_processor: Iterable | None = None,
        generation_config: GenerationConfig | None = None,
        **kwargs,
    ) -> GenerationSettings:
        gen_cfg = copy.deepcopy(generation_config if generation_config is not None else model.generation_config)
        options = pop_standard_options(kwargs, gen_cfg)
        max_length = kwargs.pop("max_length", None)
        if kwargs:
            raise ValueError(f"Unsupported generate argument(s) {sorted(kwargs)}. {_UNSUPPORTED}")
        if generation_mode not in GENERATION_MODES:
            raise ValueError(
                f"generation_mode must be one of {GENERATION_MODES} ('text': answer in text; 'audio': in text "
                f"and speech), got {generation_mode!r}."
            )
        if generation_mode == "audio" and options.return_dict_in_generate is False:
            raise ValueError(
                "generation_mode='audio' returns speech next to the text ids, so it needs the output dataclass: "
                "drop `return_dict_in_generate=False` (or generate in 'text' mode)."
            )
        if seed is not None and generator is not None:
            raise ValueError("Pass either `seed` or `generator`, not both.")
        text = StreamSampling(
            do_sample=bool(_pick(do_sample, gen_cfg, "do_sample", False)),
            temperature=float(_pick(temperature, gen_cfg, "temperature", 1.0)),
            top_k=_pick(top_k, gen_cfg, "top_k", None),
            top_p=_pick(top_p, gen_cfg, "top_p", None),
            repetition_penalty=_pick(repetition_penalty, gen_cfg, "repetition_penalty", None),
        )
        speech = StreamSampling(  # each setting falls back to the text stream's
            do_sample=bool(_pick(speech_do_sample, gen_cfg, "speech_do_sample", text.do_sample)),
            temperature=float(_pick(speech_temperature, gen_cfg, "speech_temperature", text.temperature)),
            top_k=_pick(speech_top_k, gen_cfg, "speech_top_k", text.top_k),
            top_p=_pick(speech_top_p, gen_cfg, "speech_top_p", text.top_p),
            repetition_penalty=_pick(
                speech_repetition_penalty, gen_cfg, "speech_repetition_penalty", text.repetition_penalty
            ),
        )
        flow = _flow_settings(model.config, gen_cfg, speech_ode_steps, speech_ode_solver, speech_guidance_scale)
        text_processors = LogitsProcessorList([
            *options.text_processors_before(), *(logits_processor or []), *text.processors(),
            *options.text_processors_after(),
        ])
        speech_processors = LogitsProcessorList([*(speech_logits_processor or []), *speech.processors()])
        speech_mode = generation_mode == "audio"
        return cls(
            mode=generation_mode,
            max_new_tokens=max_new_tokens if max_new_tokens is not None else gen_cfg.max_new_tokens,
            max_length=max_length,
            text=text,
            speech=speech,
            flow=flow,
            text_processors=text_processors,
            speech_processors=speech_processors,
            options=options,
            output_logits=bool(_pick(output_logits, gen_cfg, "output_logits", False)),
            return_waveform=speech_mode if return_waveform is None else bool(return_waveform) and speech_mode,
            seed=seed,
            generator=generator,
        )

    def answer_rows(self, prompt_length: int) -> int:
        """Most answer rows for a prompt of `prompt_length` tokens (`max_new_tokens`, else `max_length` minus it)."""
        rows = self.max_new_tokens
        if rows is None and self.max_length is not None:
            rows = self.max_length - prompt_length
        if rows is None:
            rows = DEFAULT_MAX_NEW_TOKENS
        if rows < 1:
            raise ValueError(f"`max_new_tokens` must be at least 1 (answer steps), got {rows}.")
        return rows


def _flow_settings(config, gen_cfg: GenerationConfig, steps, solver, guidance) -> dict | None:
    """The diffusion head's ODE settings: arguments, then the generation config, then `diffusion_config`."""
    given = {"speech_ode_steps": steps, "speech_ode_solver": solver, "speech_guidance_scale": guidance}
    if config.speech_head_type != "diffusion":
        passed = sorted(name for name, value in given.items() if value is not None)
        if passed:
            raise ValueError(
                f"{passed} set the diffusion head's ODE; this model's speech head is {config.speech_head_type!r} "
                "(discrete codes). Drop them, or use a speech_head_type='diffusion' model."
            )
        return None
    dc = config.diffusion_config
    flow = dict(
        num_steps=int(_pick(steps, gen_cfg, "speech_ode_steps", dc.num_ode_steps)),
        solver=str(_pick(solver, gen_cfg, "speech_ode_solver", dc.ode_solver)),
        guidance_scale=float(_pick(guidance, gen_cfg, "speech_guidance_scale", dc.guidance_scale)),
    )
    if flow["num_steps"] < 1:
        raise ValueError(f"`speech_ode_steps` must be >= 1, got {flow['num_steps']}.")
    if flow["solver"] not in ("euler", "heun"):
        raise ValueError(f"`speech_ode_solver` must be 'euler' or 'heun', got {flow['solver']!r}.")
    return flow


@dataclass
class PromptBatch:
    """Validated prompts of the rows a prefill adds (left-padded, as the processor lays them out)."""

    input_ids: torch.LongTensor | None  # (B, Lp)
    attention_mask: torch.LongTensor  # (B, Lp)
    position_ids: torch.LongTensor  # (B, Lp)
    input_features: torch.FloatTensor | None = None  # (N, M, F) the user clips, in slot order
    feature_attention_mask: torch.Tensor | None = None  # (N, F)
    inputs_embeds: torch.FloatTensor | None = None  # (B, Lp, D)

    @classmethod
    def check(cls, input_ids=None, attention_mask=None, input_features=None, feature_attention_mask=None,
              inputs_embeds=None, position_ids=None) -> PromptBatch:
        prompt = check_prompt(input_ids, inputs_embeds)  # (B, Lp) ids, or the first channel of the embeddings
        if attention_mask is None:
            attention_mask = torch.ones(prompt.shape, dtype=torch.long, device=prompt.device)
        if attention_mask.shape != prompt.shape:
            raise ValueError(
                f"`attention_mask` must have the prompt's shape {tuple(prompt.shape)}, got {tuple(attention_mask.shape)}."
            )
        attention_mask = attention_mask.to(device=prompt.device, dtype=torch.long)
        if bool((attention_mask[:, -1] == 0).any()):
            raise ValueError(
                "The prompt batch is right-padded; generation appends to the end of every row, so pad on the "
                "left (`processor.tokenizer.padding_side = 'left'`, the processor's default)."
            )
        if position_ids is None:  # left padding: positions count real tokens, as the row would get alone
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, Lp)
        return cls(input_ids, attention_mask, position_ids, input_features, feature_attention_mask, inputs_embeds)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.attention_mask.shape)


def _left_pad(tensor: torch.Tensor, length: int, value, dim: int = 1) -> torch.Tensor:
    """Pad `tensor` on the left along `dim` up to `length`."""
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_full(shape, value), tensor], dim=dim)


def merge_caches(old: Cache, new: Cache, old_length: int, new_length: int) -> None:
    """Append the rows of `new` to `old` in place, left-padding the shorter one's keys/values (masked out)."""
    length = max(old_length, new_length)
    for old_layer, new_layer in zip(old.layers, new.layers):
        if type(old_layer).__name__ != "DynamicLayer" or type(new_layer).__name__ != "DynamicLayer":
            raise ValueError(
                f"Rows can join a running session on a full-attention DynamicCache, got a {type(old_layer).__name__} "
                "layer. Use a backbone without sliding-window/recurrent layers for continuous batching."
            )
        for name in ("keys", "values"):
            a = _left_pad(getattr(old_layer, name), length, 0.0, dim=-2)  # (B0, H, L, Dh)
            b = _left_pad(getattr(new_layer, name), length, 0.0, dim=-2)  # (B1, H, L, Dh)
            setattr(old_layer, name, torch.cat([a, b.to(a.dtype)], dim=0))


__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "GENERATION_MODES",
    "GenerationSettings",
    "PromptBatch",
    "StreamSampling",
    "StreamStep",
    "choose_tokens",
    "merge_caches",
]
