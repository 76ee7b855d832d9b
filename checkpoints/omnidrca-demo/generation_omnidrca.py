"""Parallel text/speech generation: one KV-cached backbone step per group, k KV-cached SRH steps inside it.

Per 5 Hz step r of the answer (DESIGN.md §2, `streams.build_assistant_streams` is the same layout):

    text   row r: `<abos>` at r = 0 (forced), else sampled from the text head on h_{r-1};
                  `text_pad` once `<aeos>` was produced.
    speech row r: `[bos]`×k for r < d (the delay), else k codes sampled by the SRH from h_{r-1}, each one
                  fed back into the SRH's own k-long KV cache; `[pad]`×k once `[eos]` was produced.
    backbone:     one forward of E_text(x_r) + Group(E_speech(s_r)) on the shared KV cache -> h_r.

Text mode keeps every speech group `[pad]` (its embedding is zero) and never runs the SRH. The call
stops when both streams have ended, or after `max_new_tokens` steps.

With the diffusion head (`speech_head_type="diffusion"`) a speech row is made differently: the stop head
on h_{r-1} says how many of the k frames are speech (k = all; n < k = n frames, then `[eos]`), the DiT
integrates the flow ODE (`speech_ode_steps` Euler/Heun steps, optional classifier-free guidance) from
noise to the k normalised latents, conditioned on h_{r-1} and on the previous group's latents; the
de-normalised latents are fed back as the continuous group (`speech_latents`), and their FSQ codes fill
`speech_ids` so every id-based consumer keeps working. The waveform is decoded from the latents.
"""

from __future__ import annotations

import copy
import math
import queue
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from transformers import GenerationConfig, GenerationMixin
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation.logits_process import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from .generation_outputs import (
    OmniDRCAGenerateOutput,
    StandardGenerateOptions,
    StepRecorder,
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


class StreamPiece(NamedTuple):
    """What a streamer yields: new answer text, and new audio (float32 at the codec's rate) or None."""

    text: str
    audio: np.ndarray | None


def _pick(value, config: GenerationConfig, name: str, default):
    if value is not None:
        return value
    stored = getattr(config, name, None)
    return default if stored is None else stored


def _choose(
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



class OmniDRCAGenerationMixin(GenerationMixin):
    """`generate` / `generate_stream` for [`OmniDRCAForConditionalGeneration`] (see the module docstring)."""

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_features: torch.FloatTensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        generation_mode: str = "text",
        streamer: Any = None,
        **kwargs,
    ) -> OmniDRCAGenerateOutput:
        r"""Answer a prompt in text (`generation_mode="text"`) or in text and speech (`"audio"`).

        Args:
            input_ids / attention_mask / input_features / feature_attention_mask: the processor's output
                for a conversation ending in a generation prompt (`apply_chat_template(...,
                add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")`).
                Batches must be left-padded (the processor's default).
            generation_mode: `"text"` (text only; the SRH never runs) or `"audio"` (text and speech).
            max_new_tokens: most answer steps (one text token and, in audio mode, k speech tokens each).
            do_sample / temperature / top_k / top_p / repetition_penalty: the text stream's sampling.
            speech_*: the speech stream's; each falls back to the text stream's setting. With the diffusion
                head, `speech_temperature` (when sampling) scales the initial noise.
            speech_ode_steps / speech_ode_solver / speech_guidance_scale: diffusion head only; default to
                `config.diffusion_config` (`num_ode_steps`, `ode_solver`, `guidance_scale`).
            seed / generator: make sampling reproducible (pass one or the other).
            return_waveform: decode the speech with `model.speech_codec` (default: on in audio mode).
            output_logits: also return the raw text and SRH logits of every step (text only with the diffusion head).
            inputs_embeds / position_ids: the prompt as (B, Lp, D) embeddings (audio slots hold the audio token's
                embedding; `sequences` then holds the answer only) / its positions (default: from the mask).
            min_new_tokens / bad_words_ids / remove_invalid_values / num_return_sequences / use_cache: as in
                transformers, on the text stream (the answer may not end before `min_new_tokens` rows).
            return_dict_in_generate / output_scores / output_hidden_states / output_attentions: as in transformers
                (per-step tuples); `return_dict_in_generate=False` returns the text ids only (text mode).
            logits_processor / speech_logits_processor: extra `LogitsProcessor`s for each stream, called
                with the stream's history (text: prompt + answer ids; speech: the 25 Hz tokens so far).
            streamer: an [`OmniDRCAStreamer`], or any transformers streamer (text only, batch size 1).
            generation_config: defaults for the arguments above; `speech_*` entries are read too.

        Returns:
            [`OmniDRCAGenerateOutput`] with `sequences`, and in audio mode `speech_ids`,
            `speech_lengths`, `waveform`, `waveform_lengths` (+ `speech_latents` with the diffusion head).
        """
        steps = self._generate_steps(
            input_ids=input_ids,
            attention_mask=attention_mask,
            input_features=input_features,
            feature_attention_mask=feature_attention_mask,
            generation_mode=generation_mode,
            **kwargs,
        )
        is_ours = hasattr(streamer, "put_step")
        try:
            while True:
                try:
                    step = next(steps)
                except StopIteration as stop:
                    output = stop.value
                    break
                if streamer is None:
                    continue
                if is_ours:
                    streamer.put_step(step)
                    continue
                if step.text_ids.shape[0] != 1:
                    raise ValueError("transformers' text streamers handle batch size 1; pass one conversation.")
                if input_ids is not None:  # the prompt first, as transformers' streamers expect
                    streamer.put(input_ids.cpu())
                    input_ids = None
                streamer.put(step.text_ids.cpu())
        except BaseException as error:
            if streamer is not None and hasattr(streamer, "put_error"):
                streamer.put_error(error)
            raise
        if streamer is not None:
            streamer.end()
        return output

    @torch.no_grad()  # as `generate`: a stream must not build an autograd graph across its steps
    def generate_stream(self, processor, chunk_steps: int = 5, **kwargs) -> Iterator[StreamPiece]:
        """Generate and yield `(text_piece, audio_chunk)` as they are produced, in this thread.

        `processor` decodes the text; audio is decoded by `model.speech_codec` every `chunk_steps` steps
        (see [`OmniDRCAStreamer`]). Takes the arguments of `generate`; one conversation at a time. A
        Gradio generator function can loop over it and yield what it accumulates.
        """
        streamer = OmniDRCAStreamer(processor, codec=self.speech_codec, chunk_steps=chunk_steps)
        streamer.snap_to_codebook = self.config.speech_head_type == "diffusion" and bool(
            self.config.diffusion_config.snap_to_codebook
        )
        kwargs.pop("streamer", None)
        steps = self._generate_steps(**{**kwargs, "return_waveform": False})
        for step in steps:
            streamer.put_step(step)
            yield from streamer.drain()
        streamer.end()
        yield from streamer.drain()

    # --------------------------------------------------------------------------------------- internals

    def _resolve_generation_args(self, generation_config, kwargs) -> tuple[GenerationConfig, StandardGenerateOptions]:
        config = copy.deepcopy(generation_config if generation_config is not None else self.generation_config)
        options = pop_standard_options(kwargs, config)
        max_length = kwargs.pop("max_length", None)
        if kwargs:
            raise ValueError(
                f"Unsupported generate argument(s) {sorted(kwargs)}. OmniDRCA's generate takes the processor's "
                "inputs (or `inputs_embeds`), generation_mode, max_new_tokens, the sampling controls of each stream "
                "(do_sample, temperature, top_k, top_p, repetition_penalty and their speech_* versions), "
                "seed/generator, return_waveform, logits processors, a streamer, and transformers' min_new_tokens, "
                "bad_words_ids, num_return_sequences, use_cache, return_dict_in_generate and output_* flags."
            )
        config.omnidrca_max_length = max_length
        return config, options

    def _generate_steps(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_features: torch.FloatTensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        generation_mode: str = "text",
        max_new_tokens: int | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
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
    ) -> Iterator[StreamStep]:
        """The generation loop as a generator of rows; its return value is the `OmniDRCAGenerateOutput`."""
        cfg = self.config
        cache = kwargs.pop("past_key_values", cache)  # transformers' former name
        gen_cfg, options = self._resolve_generation_args(generation_config, kwargs)
        if generation_mode not in GENERATION_MODES:
            raise ValueError(
                f"generation_mode must be one of {GENERATION_MODES} ('text': answer in text; 'audio': in text "
                f"and speech), got {generation_mode!r}."
            )
        prompt = check_prompt(input_ids, inputs_embeds)  # (B, Lp) ids, or the first channel of the embeddings
        batch, prompt_length = prompt.shape
        device = prompt.device
        if attention_mask is None:
            attention_mask = torch.ones(batch, prompt_length, dtype=torch.long, device=device)
        if attention_mask.shape != prompt.shape:
            raise ValueError(
                f"`attention_mask` must have the prompt's shape {tuple(prompt.shape)}, got {tuple(attention_mask.shape)}."
            )
        if generation_mode == "audio" and options.return_dict_in_generate is False:
            raise ValueError(
                "generation_mode='audio' returns speech next to the text ids, so it needs the output dataclass: "
                "drop `return_dict_in_generate=False` (or generate in 'text' mode)."
            )
        attention_mask = attention_mask.to(device=device, dtype=torch.long)
        if bool((attention_mask[:, -1] == 0).any()):
            raise ValueError(
                "The prompt batch is right-padded; generation appends to the end of every row, so pad on the "
                "left (`processor.tokenizer.padding_side = 'left'`, the processor's default)."
            )
        if max_new_tokens is None:
            max_new_tokens = gen_cfg.max_new_tokens
        if max_new_tokens is None and gen_cfg.omnidrca_max_length is not None:
            max_new_tokens = gen_cfg.omnidrca_max_length - prompt_length
        if max_new_tokens is None:
            max_new_tokens = DEFAULT_MAX_NEW_TOKENS
        if max_new_tokens < 1:
            raise ValueError(f"`max_new_tokens` must be at least 1 (answer steps), got {max_new_tokens}.")
        if seed is not None and generator is not None:
            raise ValueError("Pass either `seed` or `generator`, not both.")
        if seed is not None:
            generator = torch.Generator(device=device).manual_seed(int(seed))

        text_sampling = StreamSampling(
            do_sample=bool(_pick(do_sample, gen_cfg, "do_sample", False)),
            temperature=float(_pick(temperature, gen_cfg, "temperature", 1.0)),
            top_k=_pick(top_k, gen_cfg, "top_k", None),
            top_p=_pick(top_p, gen_cfg, "top_p", None),
            repetition_penalty=_pick(repetition_penalty, gen_cfg, "repetition_penalty", None),
        )
        speech_sampling = StreamSampling(
            do_sample=bool(_pick(speech_do_sample, gen_cfg, "speech_do_sample", text_sampling.do_sample)),
            temperature=float(_pick(speech_temperature, gen_cfg, "speech_temperature", text_sampling.temperature)),
            top_k=_pick(speech_top_k, gen_cfg, "speech_top_k", text_sampling.top_k),
            top_p=_pick(speech_top_p, gen_cfg, "speech_top_p", text_sampling.top_p),
            repetition_penalty=_pick(
                speech_repetition_penalty, gen_cfg, "speech_repetition_penalty", text_sampling.repetition_penalty
            ),
        )
        diffusion = cfg.speech_head_type == "diffusion"
        flow = self._flow_settings(gen_cfg, speech_ode_steps, speech_ode_solver, speech_guidance_scale, diffusion)
        text_processors = LogitsProcessorList([
            *options.text_processors_before(), *(logits_processor or []), *text_sampling.processors(),
            *options.text_processors_after(),
        ])
        speech_processors = LogitsProcessorList([*(speech_logits_processor or []), *speech_sampling.processors()])
        output_logits = bool(_pick(output_logits, gen_cfg, "output_logits", False))
        recorder = StepRecorder(options, output_logits)
        speech_mode = generation_mode == "audio"
        return_waveform = speech_mode if return_waveform is None else bool(return_waveform) and speech_mode

        k, delay = cfg.group_size, cfg.speech_delay
        abos, aeos, text_pad = cfg.assistant_bos_token_id, cfg.assistant_eos_token_id, cfg.text_pad_token_id
        s_bos, s_eos, s_pad = cfg.speech_bos_token_id, cfg.speech_eos_token_id, cfg.speech_pad_token_id
        for name, value in (("assistant_bos", abos), ("assistant_eos", aeos), ("text_pad", text_pad)):
            if value is None:
                raise ValueError(f"`config.{name}_token_id` is not set; generation needs the stream special tokens.")
        # Tokens that are never a next-token target: forced ones and padding (`streams` gives them no loss).
        text_banned = [t for t in (abos, text_pad, cfg.audio_token_id) if t is not None]
        speech_banned = [s_bos, s_pad]

        if position_ids is None:  # left padding: positions count real tokens, as the row would get alone
            position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, Lp)
        # A prompt of embeddings has no ids: `sequences` then holds the answer only, as in transformers.
        text_history = input_ids.clone() if input_ids is not None else prompt.new_zeros(batch, 0, dtype=torch.long)
        n = options.num_return_sequences
        use_cache = options.use_cache
        prompt_embeds = None
        # A cache from an earlier call continues that answer: only the uncached ids are read (the audio is in the
        # cache) and its first row is not forced to `<abos>` again.
        past = 0 if cache is None else cache.get_seq_length()
        if past and (generation_mode == "audio" or inputs_embeds is not None or n > 1 or not use_cache):
            raise ValueError(
                "Continuing from a cache (`cache`/`past_key_values`) supports text mode with `input_ids`, one "
                "sample and `use_cache=True`: the speech stream's state is not in the cache. Generate anew instead."
            )
        if inputs_embeds is None and n == 1 and use_cache:  # the reference path: ids and audio straight in
            out = self.model(
                input_ids=input_ids[:, past:],
                attention_mask=attention_mask,
                position_ids=position_ids[:, past:],
                input_features=None if past else input_features,
                feature_attention_mask=None if past else feature_attention_mask,
                cache=cache,
                use_cache=True,
                **recorder.forward_kwargs(),
            )
        else:  # samples share their prompt's embeddings; without a cache every step re-reads them
            prompt_embeds = self.model.embed_prompt(input_ids, inputs_embeds, input_features, feature_attention_mask)
            if n > 1:
                prompt_embeds, attention_mask, position_ids, text_history = (
                    t.repeat_interleave(n, dim=0) for t in (prompt_embeds, attention_mask, position_ids, text_history)
                )
                batch *= n
            out = self.model(inputs_embeds=prompt_embeds, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=use_cache, **recorder.forward_kwargs())
        recorder.record_forward(out)
        cache = out.cache if use_cache else None
        hidden = out.last_hidden_state[:, -1]  # (B, D) predicts answer row 0
        next_position = position_ids[:, -1:] + 1  # (B, 1)

        speech_history = torch.full((batch, 0), s_pad, dtype=torch.long, device=device)  # (B, r·k)
        text_done = torch.zeros(batch, dtype=torch.bool, device=device)
        speech_done = torch.full((batch,), not speech_mode, dtype=torch.bool, device=device)
        all_speech_logits = []
        pad_group = torch.full((batch, k), s_pad, dtype=torch.long, device=device)
        if diffusion:
            latent_dim = cfg.codec_config.latent_dim
            zero_latents = torch.zeros(batch, k, latent_dim, device=device)
            latent_history = torch.zeros(batch, 0, latent_dim, device=device)  # (B, r·k, d)
            latent_group = zero_latents
            # The flow starts from noise: a fixed seed when the speech stream is not sampled, so greedy
            # generation is deterministic like the SRH's argmax; otherwise the caller's generator.
            if speech_sampling.do_sample:
                noise_generator, noise_scale = generator, speech_sampling.temperature
            else:
                noise_generator = torch.Generator(device=device).manual_seed(0)
                noise_scale = float(cfg.diffusion_config.noise_scale)

        for row in range(max_new_tokens):
            logits = self.lm_head(hidden).float()  # (B, Vt)
            masked = logits.clone()
            masked[:, text_banned] = -math.inf
            if row < options.min_new_tokens:  # the answer may not end before `min_new_tokens` rows
                masked[:, aeos] = -math.inf
            if row == 0 and not past:
                text = torch.full((batch,), abos, dtype=torch.long, device=device)
                # `<abos>` is forced whatever the head says; its scores are reported all the same
                scores = text_processors(text_history, masked) if options.output_scores else None
            else:
                text, scores = _choose(masked, text_history, text_processors, text_sampling.do_sample, generator)
                text = text.masked_fill(text_done, text_pad)
            recorder.record_step(logits, scores)
            text_done |= text == aeos

            group = pad_group
            step_speech_logits = None
            if speech_mode:
                if row < delay:
                    group = torch.full((batch, k), s_bos, dtype=torch.long, device=device)
                    latent_group = zero_latents if diffusion else None
                elif diffusion:
                    group, latent_group = self._diffusion_group(
                        hidden, group_ids=speech_history[:, -k:] if speech_history.shape[1] else pad_group,
                        group_latents=latent_history[:, -k:] if latent_history.shape[1] else zero_latents,
                        done=speech_done, flow=flow, do_sample=speech_sampling.do_sample, generator=generator,
                        noise_generator=noise_generator, noise_scale=noise_scale,
                    )
                    speech_done |= (group == s_eos).any(-1)
                else:
                    group = pad_group.clone()
                    active = ~speech_done
                    if bool(active.any()):
                        previous = speech_history[:, -1] if speech_history.shape[1] else pad_group[:, 0]
                        codes, srh_logits = self._srh_generate(
                            hidden[active], previous[active], speech_history[active], speech_banned,
                            speech_processors, speech_sampling.do_sample, generator,
                        )
                        group[active] = codes
                        if output_logits:
                            step_speech_logits = torch.full(
                                (batch, k, srh_logits.shape[-1]), math.nan, device=device
                            )
                            step_speech_logits[active] = srh_logits
                    speech_done |= (group == s_eos).any(-1)
                speech_history = torch.cat([speech_history, group], dim=1)
                if diffusion:
                    latent_history = torch.cat([latent_history, latent_group], dim=1)
            if output_logits and speech_mode and not diffusion:  # the diffusion head has no speech-token logits
                vs = cfg.speech_embed_vocab_size
                all_speech_logits.append(
                    step_speech_logits if step_speech_logits is not None
                    else torch.full((batch, k, vs), math.nan, device=device)
                )
            text_history = torch.cat([text_history, text[:, None]], dim=1)
            yield StreamStep(text_ids=text, speech_ids=group if speech_mode else None,
                             speech_latents=latent_group if speech_mode and diffusion else None)

            if bool((text_done & speech_done).all()) or row == max_new_tokens - 1:
                break
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, 1)], dim=1)
            if use_cache:
                continuous = {"speech_latents": latent_group[:, None]} if speech_mode and diffusion else {}
                out = self.model(
                    input_ids=text[:, None],
                    speech_ids=group[:, None] if speech_mode else None,
                    attention_mask=attention_mask,
                    position_ids=next_position,
                    cache=cache,
                    use_cache=True,
                    **continuous,
                    **recorder.forward_kwargs(),
                )
                cache = out.cache
            else:  # the whole sequence again: prompt, then every answer row so far
                rows = row + 1
                speech = {}
                if speech_mode:
                    prompt_groups = pad_group[:, None].expand(batch, prompt_embeds.shape[1], k)
                    speech["speech_ids"] = torch.cat([prompt_groups, speech_history.view(batch, rows, k)], dim=1)
                    if diffusion:
                        latents = latent_history.view(batch, rows, k, -1)
                        speech["speech_latents"] = torch.cat([latents.new_zeros(batch, prompt_embeds.shape[1],
                                                                                *latents.shape[2:]), latents], 1)
                answer = self.model.get_input_embeddings()(text_history[:, -rows:])  # (B, rows, D)
                steps = next_position + torch.arange(rows, device=device) - (rows - 1)  # (B, rows)
                out = self.model(
                    inputs_embeds=torch.cat([prompt_embeds, answer.to(prompt_embeds.dtype)], dim=1),
                    attention_mask=attention_mask, position_ids=torch.cat([position_ids, steps], dim=1),
                    use_cache=False, **speech, **recorder.forward_kwargs(),
                )
            recorder.record_forward(out)
            hidden = out.last_hidden_state[:, -1]  # (B, D) predicts the next row
            next_position = next_position + 1

        result = OmniDRCAGenerateOutput(sequences=text_history, cache=cache)
        recorder.fill(result)  # scores / logits / hidden_states / attentions, as requested
        if output_logits and speech_mode and not diffusion:
            result.speech_logits = torch.stack(all_speech_logits, dim=1)  # (B, S, k, Vs)
        if speech_mode:
            speech = speech_history[:, delay * k :]  # (B, T) drop the delay's bos groups
            is_eos = speech == s_eos
            ends = torch.where(is_eos.any(-1), is_eos.int().argmax(-1), torch.full_like(is_eos[:, 0], speech.shape[1], dtype=torch.long))
            result.speech_ids, result.speech_lengths = speech, ends
            if diffusion:
                result.speech_latents = latent_history[:, delay * k :]  # (B, T, d)
            if return_waveform and diffusion:
                result.waveform, result.waveform_lengths = self._decode_latent_waveform(result.speech_latents, ends)
            elif return_waveform:
                result.waveform, result.waveform_lengths = self._decode_waveform(speech, ends)
        return result.sequences if options.return_dict_in_generate is False else result

    def _flow_settings(self, gen_cfg, steps, solver, guidance, diffusion: bool) -> dict | None:
        """The diffusion head's ODE settings: arguments, then the generation config, then `diffusion_config`."""
        given = {"speech_ode_steps": steps, "speech_ode_solver": solver, "speech_guidance_scale": guidance}
        if not diffusion:
            passed = sorted(name for name, value in given.items() if value is not None)
            if passed:
                raise ValueError(
                    f"{passed} set the diffusion head's ODE; this model's speech head is "
                    f"{self.config.speech_head_type!r} (discrete codes). Drop them, or use a speech_head_type='diffusion' model."
                )
            return None
        dc = self.config.diffusion_config
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

    def _diffusion_group(
        self,
        hidden: torch.Tensor,
        group_ids: torch.LongTensor,
        group_latents: torch.Tensor,
        done: torch.BoolTensor,
        flow: dict,
        do_sample: bool,
        generator: torch.Generator | None,
        noise_generator: torch.Generator | None,
        noise_scale: float,
    ) -> tuple[torch.LongTensor, torch.Tensor]:
        """One speech row with the diffusion head, for the rows not yet ended.

        Args:
            hidden: (B, D) backbone states; group_ids / group_latents: (B, k) / (B, k, d) the previous group.
            done: (B,) rows whose speech has ended (they get a `[pad]` group).
        Returns:
            (B, k) ids (FSQ codes of the frames, then `[eos]`, `[pad]`) and (B, k, d) codec latents (0 off frames).
        """
        cfg, head, embed = self.config, self.speech_head, self.model.speech_embed
        k = cfg.group_size
        batch = hidden.shape[0]
        group = torch.full((batch, k), cfg.speech_pad_token_id, dtype=torch.long, device=hidden.device)
        latents = torch.zeros(batch, k, cfg.codec_config.latent_dim, device=hidden.device)
        active = ~done
        if not bool(active.any()):
            return group, latents
        h = hidden[active]
        stop_logits = head.stop_head(h).float()  # (n, k + 1)
        if do_sample:
            frames = torch.multinomial(torch.softmax(stop_logits, -1), 1, generator=generator).squeeze(-1)
        else:
            frames = stop_logits.argmax(-1)  # (n,) speech frames in this group; k = a full group
        previous_mask = embed.frame_mask(group_ids[active])  # (n, k)
        previous = embed.normalize(group_latents[active].float()) * previous_mask[..., None]
        sampled = head.sample(h, previous, previous_mask, noise_scale=noise_scale, generator=noise_generator,
                              **flow)  # (n, k, d) normalised
        raw = embed.denormalize(sampled).clamp(-1.0, 1.0)  # the codec's latents are bounded to [-1, 1]
        is_frame = torch.arange(k, device=hidden.device) < frames[:, None]  # (n, k)
        codes = self.speech_codec.quantizer.latents_to_codes(raw)  # (n, k)
        ids = torch.where(is_frame, codes, torch.full_like(codes, cfg.speech_pad_token_id))
        ends = frames < k
        ids[ends, frames[ends]] = cfg.speech_eos_token_id
        group[active] = ids
        latents[active] = raw * is_frame[..., None]
        return group, latents

    def _decode_latent_waveform(self, latents: torch.Tensor, lengths: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, d) generated codec latents and (B,) frame counts -> (B, samples) waveform and (B,) sample counts."""
        per_code = self.speech_codec.config.samples_per_code
        longest = int(lengths.max()) if lengths.numel() else 0
        if longest == 0:
            return torch.zeros(latents.shape[0], 0, device=latents.device), torch.zeros_like(lengths)
        decodable = lengths > 0
        wave = torch.zeros(latents.shape[0], longest * per_code, device=latents.device)
        wave[decodable] = self.latents_to_waveform(latents[decodable, :longest], lengths[decodable])
        return wave, lengths * per_code

    def _srh_generate(
        self,
        hidden: torch.Tensor,
        previous: torch.LongTensor,
        history: torch.LongTensor,
        banned: list[int],
        processors: LogitsProcessorList,
        do_sample: bool,
        generator: torch.Generator | None,
    ) -> tuple[torch.LongTensor, torch.Tensor]:
        """k autoregressive SRH steps for n rows on a k-long KV cache.

        Args:
            hidden: (n, D) backbone states; previous: (n,) the token before the group; history: (n, h).
        Returns:
            (n, k) tokens ([pad] after an [eos]) and their (n, k, Vs) raw logits.
        """
        head, cfg = self.speech_head, self.config
        conditions = head.condition(hidden)  # (n, k, Ds)
        cache = DynamicCache(config=head.decoder.config)
        tokens, logits_out = [], []
        ended = torch.zeros_like(previous, dtype=torch.bool)
        token = previous
        for j in range(cfg.group_size):
            inputs = conditions[:, j : j + 1] + head.decoder.embed_tokens(token[:, None])  # (n, 1, Ds)
            out = head.decoder(inputs_embeds=inputs, cache=cache, use_cache=True)
            logits = head.lm_head(out.last_hidden_state[:, -1]).float()  # (n, Vs)
            logits_out.append(logits)
            masked = logits.clone()
            masked[:, banned] = -math.inf
            token, _ = _choose(masked, history, processors, do_sample, generator)
            token = token.masked_fill(ended, cfg.speech_pad_token_id)
            ended |= token == cfg.speech_eos_token_id
            tokens.append(token)
            history = torch.cat([history, token[:, None]], dim=1)
        return torch.stack(tokens, dim=1), torch.stack(logits_out, dim=1)  # (n, k), (n, k, Vs)

    def _decode_waveform(self, speech: torch.LongTensor, lengths: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) speech stream and (B,) code counts -> (B, samples) waveform and (B,) sample counts."""
        codec = self.speech_codec
        per_code = codec.config.samples_per_code
        longest = int(lengths.max()) if lengths.numel() else 0
        if longest == 0:
            return torch.zeros(speech.shape[0], 0, device=speech.device), torch.zeros_like(lengths)
        codes = speech[:, :longest]
        mask = torch.arange(longest, device=speech.device) < lengths[:, None]  # (B, T')
        decodable = lengths > 0  # a row without codes stays silent (the codec needs at least one code)
        wave = torch.zeros(speech.shape[0], longest * per_code, device=speech.device)
        wave[decodable] = codec.decode(codes[decodable], mask[decodable].long()).float()
        return wave, lengths * per_code


class IncrementalSpeechDecoder:
    """Decodes a growing stream of codec codes (or, with `continuous=True`, codec latent frames) into audio
    chunks that join into the full decode.

    The codec's decoder is convolutional, so a code only influences samples within its receptive field.
    Each chunk is decoded from a window with `context_codes` codes on each side; with the default
    (the decoder's receptive radius, iSTFT vocoder) the joined chunks equal decoding everything at once
    up to float rounding. Smaller values lower the latency of the first chunk at some boundary error.
    """

    def __init__(self, codec, chunk_codes: int, context_codes: int | None = None, continuous: bool = False):
        if chunk_codes < 1:
            raise ValueError(f"`chunk_codes` must be at least 1, got {chunk_codes}.")
        self.codec = codec
        self.continuous = continuous  # frames are (d,) latents for `decode_continuous`, not codes
        self.chunk_codes = chunk_codes
        self.context_codes = receptive_radius_codes(codec.config) if context_codes is None else int(context_codes)
        self.codes: list[int] = []
        self.emitted = 0  # codes whose audio has been returned

    def push(self, codes: Iterable) -> list[np.ndarray]:
        if self.continuous:
            self.codes.extend(torch.as_tensor(frame, dtype=torch.float32) for frame in codes)
        else:
            self.codes.extend(int(c) for c in codes)
        chunks = []
        while len(self.codes) - self.emitted >= self.chunk_codes + self.context_codes:
            chunks.append(self._decode(self.emitted + self.chunk_codes))
        return chunks

    def flush(self) -> np.ndarray | None:
        return self._decode(len(self.codes)) if len(self.codes) > self.emitted else None

    def _decode(self, stop: int) -> np.ndarray:
        start = max(0, self.emitted - self.context_codes)
        end = min(len(self.codes), stop + self.context_codes)
        per_code = self.codec.config.samples_per_code
        device = next(self.codec.parameters()).device
        with torch.no_grad():
            if self.continuous:
                wave = self.codec.decode_continuous(torch.stack(self.codes[start:end])[None].to(device))[0]
            else:
                wave = self.codec.decode(torch.tensor([self.codes[start:end]], device=device))[0]
        chunk = wave[(self.emitted - start) * per_code : (stop - start) * per_code]
        self.emitted = stop
        return chunk.float().cpu().numpy()


def receptive_radius_codes(codec_config) -> int:
    """How many codes on either side of a code can change its decoded samples (iSTFT vocoder).

    Sums the half-widths of every decoder layer, each at its own frame rate, then the vocoder's
    overlap-add window; Griffin-Lim's iterations widen it further, so its chunks join only approximately.
    """
    half = codec_config.kernel_size // 2
    rates = int(math.log2(codec_config.frames_per_code)) + 1  # 25 Hz, 50 Hz, 100 Hz
    radius = half  # conv_in at 25 Hz
    for level in range(rates):
        scale = 2**level  # frames of this rate per code
        radius += codec_config.decoder_layers * half / scale
        if level < rates - 1:
            radius += 1 / scale  # the x2 transposed conv reads one frame either side
    frames = codec_config.n_fft // codec_config.hop_length  # iSTFT frames overlapping one sample
    radius += frames / 2 / codec_config.frames_per_code
    return math.ceil(radius)


class OmniDRCAStreamer:
    """Yields `(text_piece, audio_chunk)` while `model.generate(..., streamer=streamer)` runs.

    Pass it to `generate` in a background thread and iterate it in the foreground, like transformers'
    `TextIteratorStreamer`; or use `model.generate_stream`, which drives one in the same thread.
    `audio_chunk` is float32 at `sampling_rate` (None when no audio is ready); text pieces are decoded
    from the answer tokens (without `<abos>`/`<aeos>`). One conversation (batch size 1) at a time.

    Args:
        processor: the model's [`OmniDRCAProcessor`] (its tokenizer decodes the text).
        codec: `model.speech_codec`; without it, audio chunks are never produced.
        chunk_steps: decode audio every this many 5 Hz steps (k·chunk_steps codes per chunk).
        context_codes: codes of context on each side of a chunk; default exact (see
            [`IncrementalSpeechDecoder`]).
        timeout: seconds the iterator waits for the next piece before raising `queue.Empty`.
    """

    def __init__(self, processor, codec=None, chunk_steps: int = 5, context_codes: int | None = None,
                 timeout: float | None = None):
        if chunk_steps < 1:
            raise ValueError(f"`chunk_steps` must be at least 1 (5 Hz steps per audio chunk), got {chunk_steps}.")
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.codec = codec
        self.chunk_steps = chunk_steps
        self.context_codes = context_codes
        self.timeout = timeout
        self.sampling_rate = None if codec is None else codec.config.sampling_rate
        self.snap_to_codebook = False  # diffusion head: set by generate_stream from the model's config
        self.queue: queue.Queue = queue.Queue()
        self._end = object()
        self._reset()

    def _reset(self) -> None:
        self.text_ids: list[int] = []
        self.text_emitted = ""
        self.text_ended = False
        self.speech_ended = False
        self.audio_decoder = None

    def put_step(self, step: StreamStep) -> None:
        if step.text_ids.shape[0] != 1:
            raise ValueError(
                f"OmniDRCAStreamer streams one conversation at a time, got a batch of {step.text_ids.shape[0]}."
            )
        cfg = self.processor.stream_config
        text_piece = ""
        token = int(step.text_ids[0])
        if not self.text_ended:
            if token == cfg.assistant_eos_token_id:
                self.text_ended = True
            elif token not in (cfg.assistant_bos_token_id, cfg.text_pad_token_id):
                self.text_ids.append(token)
                text = self.tokenizer.decode(self.text_ids, skip_special_tokens=True)
                if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                    text_piece, self.text_emitted = text[len(self.text_emitted) :], text
        chunks = []
        if step.speech_ids is not None and self.codec is not None and not self.speech_ended:
            continuous = step.speech_latents is not None  # diffusion head: decode the latents themselves
            if self.audio_decoder is None:
                k = step.speech_ids.shape[-1]
                self.audio_decoder = IncrementalSpeechDecoder(
                    self.codec, k * self.chunk_steps, self.context_codes, continuous=continuous
                )
            group = step.speech_ids[0].tolist()
            if self.processor.speech_eos_token_id in group:
                self.speech_ended = True
            codes = self.processor.speech_codes(group)
            if continuous:  # the frames lead the group, before any [eos]
                snap = self.snap_to_codebook
                frames = step.speech_latents[0, : len(codes)].float().cpu()
                if snap:
                    frames = self.codec.quantizer.codes_to_latents(torch.tensor(codes))
                codes = list(frames)
            chunks = self.audio_decoder.push(codes)
            if self.speech_ended:
                tail = self.audio_decoder.flush()
                chunks += [tail] if tail is not None else []
        if text_piece:
            self.queue.put(StreamPiece(text_piece, chunks.pop(0) if chunks else None))
        for chunk in chunks:
            self.queue.put(StreamPiece("", chunk))

    def end(self) -> None:
        text = self.tokenizer.decode(self.text_ids, skip_special_tokens=True)
        tail = self.audio_decoder.flush() if self.audio_decoder is not None and not self.speech_ended else None
        if text[len(self.text_emitted) :] or tail is not None:
            self.queue.put(StreamPiece(text[len(self.text_emitted) :], tail))
        self.queue.put(self._end)
        self._reset()

    def put_error(self, error: BaseException) -> None:
        self.queue.put(error)

    def drain(self) -> Iterator[StreamPiece]:
        """The pieces ready now, without waiting (what `generate_stream` yields after each step)."""
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return
            if item is self._end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def __iter__(self) -> OmniDRCAStreamer:
        return self

    def __next__(self) -> StreamPiece:
        item = self.queue.get(timeout=self.timeout)
        if item is self._end:
            raise StopIteration
        if isinstance(item, BaseException):
            raise RuntimeError("generation failed in the generating thread") from item
        return item


__all__ = [
    "GENERATION_MODES",
    "IncrementalSpeechDecoder",
    "OmniDRCAGenerateOutput",
    "OmniDRCAGenerationMixin",
    "OmniDRCAStreamer",
    "StreamPiece",
    "StreamStep",
    "StreamSampling",
    "receptive_radius_codes",
]
