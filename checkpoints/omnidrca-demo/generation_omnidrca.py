"""`generate` / `generate_stream`: thin loops over a [`GenerationSession`] (generation_session.py).

Per 5 Hz step r of the answer (DESIGN.md §2; `streams.StreamLayout` / `build_assistant_streams` is the layout):

    text   row r: `<abos>` at r = 0 (forced), else sampled from the text head on h_{r-1};
                  `text_pad` once `<aeos>` was produced (with `text_alignment="spread"` a spoken answer may
                  also sample `text_pad` between its words, to keep each word beside its speech).
    speech row r: `[bos]`×k for r < d (the delay), else the speech head's next group from h_{r-1}
                  (speech_head_srh.py: k SRH steps on a k-long KV cache; diffusion_head.py: stop head + flow ODE,
                  the latents fed back as the continuous group); `[pad]`×k once `[eos]` was produced.
    backbone:     one forward of E_text(x_r) + Group(E_speech(s_r)) on the shared KV cache -> h_r.

Text mode keeps every speech group `[pad]` (its embedding is zero) and never runs the speech head. The call
stops when both streams have ended, or after `max_new_tokens` steps. Streaming lives in streaming_omnidrca.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from transformers import GenerationMixin
from transformers.cache_utils import Cache

from .generation_outputs import OmniDRCAGenerateOutput
from .generation_session import GenerationSession
from .generation_settings import (
    DEFAULT_MAX_NEW_TOKENS,
    GENERATION_MODES,
    GenerationSettings,
    PromptBatch,
    StreamSampling,
    StreamStep,
)
from .streaming_omnidrca import IncrementalSpeechDecoder, OmniDRCAStreamer, StreamPiece, receptive_radius_codes


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
        is_ours = hasattr(streamer, "put_step")
        try:
            session = self.start_session(
                input_ids=input_ids,
                attention_mask=attention_mask,
                input_features=input_features,
                feature_attention_mask=feature_attention_mask,
                generation_mode=generation_mode,
                **kwargs,
            )
            while not session.finished:
                step = session.step()
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
            output = session.finish()
        except BaseException as error:
            if streamer is not None and hasattr(streamer, "put_error"):
                streamer.put_error(error)
            raise
        if streamer is not None:
            streamer.end()
        return output

    def start_session(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_features: torch.FloatTensor | None = None,
        feature_attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> GenerationSession:
        """A [`GenerationSession`] prefilled with these prompts, to be stepped one 5 Hz row at a time.

        Takes the arguments of `generate` (minus the streamer). A serving loop calls `session.step()`,
        `session.add_rows(PromptBatch.check(...))` and `session.remove_rows([...])` between steps.
        """
        cache = kwargs.pop("past_key_values", cache)  # transformers' former name
        settings = GenerationSettings.resolve(self, **kwargs)
        prompt = PromptBatch.check(input_ids, attention_mask, input_features, feature_attention_mask,
                                   inputs_embeds, position_ids)
        session = GenerationSession(self, settings)
        session.prefill(prompt, cache=cache)
        return session

    @torch.no_grad()  # as `generate`: a stream must not build an autograd graph across its steps
    def generate_stream(self, processor, chunk_steps: int = 5, **kwargs) -> Iterator[StreamPiece]:
        """Generate and yield `(text_piece, audio_chunk)` as they are produced, in this thread.

        `processor` decodes the text; audio is decoded by `model.speech_codec` every `chunk_steps` steps
        (see [`OmniDRCAStreamer`]). Takes the arguments of `generate`; one conversation at a time. A
        Gradio generator function can loop over it and yield what it accumulates.
        """
        kwargs.pop("streamer", None)
        session = self.start_session(**{**kwargs, "return_waveform": False})
        streamer = OmniDRCAStreamer(processor, codec=self.speech_codec, chunk_steps=chunk_steps,
                                    snap_to_codebook=session.head_state.snap_to_codebook)
        while not session.finished:
            streamer.put_step(session.step())
            yield from streamer.drain()
        streamer.end()
        yield from streamer.drain()

    # ------------------------------------------------------------- waveforms (called by the speech heads)

    def _decode_waveform(self, speech: torch.LongTensor, lengths: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) speech stream and (B,) code counts -> (B, samples) waveform and (B,) sample counts."""
        codec = self.speech_codec
        return self._decode_rows(speech, lengths, lambda codes, mask: codec.decode(codes, mask.long()))

    def _decode_latent_waveform(self, latents: torch.Tensor, lengths: torch.LongTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, d) generated codec latents and (B,) frame counts -> (B, samples) waveform and (B,) sample counts."""
        return self._decode_rows(latents, lengths, lambda frames, mask: self.latents_to_waveform(frames, mask.sum(-1)))

    def _decode_rows(self, frames: torch.Tensor, lengths: torch.LongTensor, decode) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode (B, T, ...) frames up to each row's length with `decode(frames, mask)`; a row without frames stays
        silent (the codec needs at least one)."""
        per_code = self.speech_codec.config.samples_per_code
        longest = int(lengths.max()) if lengths.numel() else 0
        if longest == 0:
            return torch.zeros(frames.shape[0], 0, device=frames.device), torch.zeros_like(lengths)
        mask = torch.arange(longest, device=frames.device) < lengths[:, None]  # (B, T')
        decodable = lengths > 0
        wave = torch.zeros(frames.shape[0], longest * per_code, device=frames.device)
        wave[decodable] = decode(frames[decodable, :longest], mask[decodable]).float()
        return wave, lengths * per_code


__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "GENERATION_MODES",
    "GenerationSession",
    "GenerationSettings",
    "IncrementalSpeechDecoder",
    "OmniDRCAGenerateOutput",
    "OmniDRCAGenerationMixin",
    "OmniDRCAStreamer",
    "StreamPiece",
    "StreamStep",
    "StreamSampling",
    "receptive_radius_codes",
]
