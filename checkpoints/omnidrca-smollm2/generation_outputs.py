"""What `generate` returns, and transformers' standard generate arguments as OmniDRCA reads them.

OmniDRCA steps its own loop (`generation_session`), so the arguments that transformers' `generate` takes from
`GenerationConfig` are resolved here: the ones with a meaning for the text stream are honoured (`min_new_tokens`,
`bad_words_ids`, `remove_invalid_values`, `num_return_sequences`, `use_cache`, the `output_*` flags,
`return_dict_in_generate`), values that ask for nothing (a field at its default) are accepted, and anything else
raises instead of being silently ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import GenerationConfig
from transformers.generation.logits_process import InfNanRemoveLogitsProcessor, NoBadWordsLogitsProcessor
from transformers.generation.utils import GenerateDecoderOnlyOutput

# Callers (the any-to-any pipeline, chat UIs) pass these as a matter of course; the streams stop on their own end
# tokens and pad with their own pad ids, so they mean nothing here.
IGNORED_GENERATION_KWARGS = ("pad_token_id", "eos_token_id", "bos_token_id")
# Memory knobs of transformers' loop: OmniDRCA's loop already computes only the last position's logits.
ACCEPTED_NO_OP_KWARGS = ("logits_to_keep",)
_DEFAULTS = GenerationConfig()


@dataclass
class OmniDRCAGenerateOutput(GenerateDecoderOnlyOutput):
    """What `generate` returns. S = answer steps (one per 5 Hz group), T = (S - d)·k speech tokens.

    A `GenerateDecoderOnlyOutput`: `sequences`, and with `return_dict_in_generate=True` the per-step tuples
    `scores` / `logits` (each (B, Vt)), `hidden_states` / `attentions` (per step, per layer) and `cache`. Without
    `return_dict_in_generate`, `output_logits=True` gives `logits` stacked as (B, S, Vt).
    """

    speech_ids: torch.LongTensor | None = None  # (B, T) 25 Hz speech after the delay: codes, [eos], [pad]...
    speech_lengths: torch.LongTensor | None = None  # (B,) codes before [eos] in each row
    waveform: torch.FloatTensor | None = None  # (B, samples) decoded by `model.speech_codec`, 0 past each length
    waveform_lengths: torch.LongTensor | None = None  # (B,) valid samples per row
    speech_logits: torch.FloatTensor | None = None  # (B, S, k, Vs) raw SRH logits; NaN where nothing was sampled
    speech_latents: torch.FloatTensor | None = None  # (B, T, d) diffusion head: codec latents aligned with speech_ids


@dataclass
class StandardGenerateOptions:
    """transformers' standard `generate` arguments, resolved against the generation config."""

    return_dict_in_generate: bool | None = None  # None: not asked for; OmniDRCA then returns its output dataclass
    output_scores: bool = False
    output_hidden_states: bool = False
    output_attentions: bool = False
    use_cache: bool = True
    num_return_sequences: int = 1
    min_new_tokens: int = 0
    bad_words_ids: list | None = None
    remove_invalid_values: bool = False

    def text_processors_before(self) -> list:
        return [] if not self.bad_words_ids else [NoBadWordsLogitsProcessor(self.bad_words_ids)]

    def text_processors_after(self) -> list:
        return [InfNanRemoveLogitsProcessor()] if self.remove_invalid_values else []

    @property
    def records_steps(self) -> bool:
        return self.output_scores or self.output_hidden_states or self.output_attentions


def pop_standard_options(kwargs: dict, config: GenerationConfig) -> StandardGenerateOptions:
    """Take transformers' standard arguments out of `kwargs` (falling back to `config`); what is left is unsupported."""

    def pick(name: str):
        value = kwargs.pop(name, None)
        return getattr(config, name, None) if value is None else value

    for name in (*IGNORED_GENERATION_KWARGS, *ACCEPTED_NO_OP_KWARGS):
        kwargs.pop(name, None)
    for name in ("num_beams", "num_beam_groups"):
        value = kwargs.pop(name, None)
        if value not in (None, 1):
            raise ValueError(
                f"`{name}={value}` is not supported: OmniDRCA generates its parallel text/speech streams with greedy "
                f"or sampled decoding (expected 1, got {value}). Use `num_return_sequences` for several samples."
            )
    options = StandardGenerateOptions(
        return_dict_in_generate=kwargs.pop("return_dict_in_generate", None),
        output_scores=bool(pick("output_scores")),
        output_hidden_states=bool(pick("output_hidden_states")),
        output_attentions=bool(pick("output_attentions")),
        use_cache=pick("use_cache") is not False,
        num_return_sequences=int(pick("num_return_sequences") or 1),
        min_new_tokens=int(pick("min_new_tokens") or 0),
        bad_words_ids=pick("bad_words_ids"),
        remove_invalid_values=bool(pick("remove_invalid_values")),
    )
    if options.num_return_sequences < 1:
        raise ValueError(f"`num_return_sequences` must be at least 1, got {options.num_return_sequences}.")
    # A value that asks for nothing (`forced_eos_token_id=None`, `encoder_no_repeat_ngram_size=0`, or any standard
    # field at its default) is accepted; anything else left in `kwargs` is reported as unsupported by the caller.
    for name in [n for n, v in kwargs.items() if _asks_nothing(v) or _same(v, getattr(_DEFAULTS, n, object()))]:
        kwargs.pop(name)
    return options


def _asks_nothing(value: Any) -> bool:
    return value is None or (isinstance(value, (bool, int, float)) and not value)


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except (RuntimeError, TypeError, ValueError):  # tensors and other values without a plain truth value
        return False


class StepRecorder:
    """Collects the per-step outputs transformers' `generate` returns: processed `scores` and raw `logits` (B, Vt),
    and the backbone's `hidden_states` / `attentions` of the forward pass that produced them."""

    def __init__(self, options: StandardGenerateOptions, output_logits: bool):
        self.options = options
        self.output_logits = output_logits
        self.scores: list[torch.Tensor] = []
        self.logits: list[torch.Tensor] = []
        self.hidden_states: list[tuple] = []
        self.attentions: list[tuple] = []

    def forward_kwargs(self) -> dict:
        opts = self.options
        return {
            **({"output_hidden_states": True} if opts.output_hidden_states else {}),
            **({"output_attentions": True} if opts.output_attentions else {}),
        }

    def record_forward(self, outputs) -> None:
        if self.options.output_hidden_states:
            self.hidden_states.append(tuple(outputs.hidden_states))
        if self.options.output_attentions:
            self.attentions.append(tuple(outputs.attentions))

    def record_step(self, logits: torch.Tensor, scores: torch.Tensor) -> None:
        if self.output_logits:
            self.logits.append(logits)
        if self.options.output_scores:
            self.scores.append(scores)

    def fill(self, result: OmniDRCAGenerateOutput) -> None:
        """Attach what was recorded: tuples per step, except the BC layout of `logits` (see the output's doc)."""
        opts = self.options
        if self.output_logits:
            stacked = opts.return_dict_in_generate is None
            result.logits = torch.stack(self.logits, dim=1) if stacked else tuple(self.logits)
        result.scores = tuple(self.scores) if opts.output_scores else None
        result.hidden_states = tuple(self.hidden_states) if opts.output_hidden_states else None
        result.attentions = tuple(self.attentions) if opts.output_attentions else None


def check_prompt(input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor | None) -> torch.Tensor:
    """The prompt as (B, Lp) ids, or as the first channel of (B, Lp, D) `inputs_embeds`; ValueError when malformed."""
    if inputs_embeds is not None:
        if inputs_embeds.dim() != 3 or inputs_embeds.shape[1] == 0:
            raise ValueError(f"`inputs_embeds` must be a non-empty (batch, prompt_length, hidden) tensor, got "
                             f"{tuple(inputs_embeds.shape)}. Build them with `model.get_input_embeddings()`.")
        if input_ids is not None and tuple(input_ids.shape) != tuple(inputs_embeds.shape[:2]):
            raise ValueError(f"`input_ids` {tuple(input_ids.shape)} and `inputs_embeds` "
                             f"{tuple(inputs_embeds.shape)} must describe the same (batch, prompt_length).")
        return inputs_embeds[..., 0]
    if input_ids is None or input_ids.dim() != 2 or input_ids.shape[1] == 0:
        shape = None if input_ids is None else tuple(input_ids.shape)
        raise ValueError(
            f"`input_ids` must be a non-empty (batch, prompt_length) tensor, got {shape}. Build the prompt with "
            "`processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, "
            "return_dict=True, return_tensors='pt')`."
        )
    return input_ids

__all__ = ["OmniDRCAGenerateOutput", "StandardGenerateOptions", "StepRecorder", "check_prompt", "pop_standard_options"]
