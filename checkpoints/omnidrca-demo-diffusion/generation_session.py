"""Generation as a session stepped one 5 Hz row at a time, as moshi's `LMGen` steps frames.

```
 settings = GenerationSettings.resolve(model, **generate_kwargs)   both streams' sampling, limits, output flags
 session  = GenerationSession(model, settings)
 session.prefill(PromptBatch.check(...))       backbone over the prompts -> shared KV cache, h (B, D)
      │
      ▼  session.step(extra_embeds=None) -> StreamStep           one 5 Hz row for every live row
 ┌─────────────────────────────────────────────────────────────────────────────────┐
 │ h ─► lm_head ─► text token x_r       (<abos> forced at a row's step 0)          │
 │ h ─► speech head ─► group s_r        ([bos]×k in the delay, [pad]×k once ended) │
 │ E_text(x_r) + Group(E_speech(s_r)) + extra_embeds ─► backbone (1 call) ─► h     │
 └─────────────────────────────────────────────────────────────────────────────────┘
      │  between steps: add_rows(prompts) prefills new rows into the shared cache;
      │                 remove_rows(rows) hands back their output and drops them
      ▼
 session.finish() -> OmniDRCAGenerateOutput
```

`generate`, `generate_stream` and [`OmniDRCAStreamer`] are loops over a session; a server's continuous batching
(rows join and leave between steps) and full-duplex (the user's audio of each step enters through `extra_embeds`)
drive the same loop. Rows that join later are left-padded into the shared KV cache (masked), so the rows already
running are untouched and a joined row attends to exactly its own prompt and answer.

Per row, the layout is `streams.build_assistant_streams`'s: `<abos>` at step 0, `[bos]` groups for the first d
steps, then the speech head's groups; each stream pads once it has produced its end token; a row ends when both
streams have ended or after `max_new_tokens` steps.
"""

from __future__ import annotations

import math

import torch

from .generation_outputs import OmniDRCAGenerateOutput, StepRecorder
from .generation_settings import GenerationSettings, PromptBatch, StreamStep, _left_pad, choose_tokens, merge_caches
from .streams import gate_speech_ids

ExtraEmbeds = torch.Tensor | dict[int, torch.Tensor] | None  # (B, D), or {row: (D,)}


class GenerationSession:
    """The state of one batch of answers being generated (see the module docstring).

    State, B = live rows, L = cached positions, H = text history, R = answer steps held:
        cache (B, H_kv, L, Dh) per layer; attention_mask (B, L); hidden (B, D) the state that predicts the next row;
        text_history (B, H) prompt + answer ids; speech_history (B, R·k); latent_history (B, R·k, d) (diffusion);
        steps (B,) answer rows each row has produced; lived (B,) those before it ended; start (B,) the step
        at which each row joined.
    """

    def __init__(self, model, settings: GenerationSettings):
        self.model, self.settings = model, settings
        layout = model.config.stream_layout  # the same layout `streams.build_assistant_streams` trains on
        self.k, self.delay = layout.group_size, layout.speech_delay
        self.abos, self.aeos = layout.assistant_bos_token_id, layout.assistant_eos_token_id
        self.text_pad = layout.text_pad_token_id
        self.s_bos, self.s_eos, self.s_pad = layout.speech_bos_token_id, layout.speech_eos_token_id, layout.speech_pad_token_id
        for name, value in (("assistant_bos", self.abos), ("assistant_eos", self.aeos), ("text_pad", self.text_pad)):
            if value is None:
                raise ValueError(f"`config.{name}_token_id` is not set; generation needs the stream special tokens.")
        self.speech_mode = settings.speech_mode
        # Tokens that are never a next-token target: forced ones and padding (`streams` gives them no loss), but
        # the pads between the words of a spread spoken answer are learned.
        self.text_banned = layout.text_banned(self.speech_mode)
        self.recorder = StepRecorder(settings.options, settings.output_logits)
        self.speech_logits: list[torch.Tensor] = []  # per step (B, k, Vs), SRH only
        self.batch = 0
        self.cache = None
        self.prompt_embeds = None  # kept only without a KV cache: every step re-reads the prompt
        self._unfed: tuple | None = None  # the last row, when the session ended before feeding it back

    # ------------------------------------------------------------------------------------------ prefill

    def prefill(self, prompt: PromptBatch, cache=None) -> None:
        """Run the backbone over the first prompts. `cache` continues an earlier text answer (its ids only)."""
        s, opts = self.settings, self.settings.options
        self.device = prompt.attention_mask.device
        if s.seed is not None and s.generator is None:  # once per session: rows prefilled later keep its stream
            s.generator = torch.Generator(device=self.device).manual_seed(int(s.seed))
        self.max_new_tokens = s.answer_rows(prompt.shape[1])
        # A cache from an earlier call continues that answer: only the uncached ids are read (the audio is in the
        # cache) and its first row is not forced to `<abos>` again.
        self.past = 0 if cache is None else cache.get_seq_length()
        if self.past and (self.speech_mode or prompt.inputs_embeds is not None or opts.num_return_sequences > 1
                          or not opts.use_cache):
            raise ValueError(
                "Continuing from a cache (`cache`/`past_key_values`) supports text mode with `input_ids`, one "
                "sample and `use_cache=True`: the speech stream's state is not in the cache. Generate anew instead."
            )
        # The speech head's own per-generation state; continuous heads add latents to the speech stream.
        self.head_state = self.model.speech_head.start_generation(self.model, s, self.device)
        self.continuous = self.head_state.latent_dim is not None
        out, state = self._run_prompt(prompt, cache)
        self.cache = out.cache if opts.use_cache else None
        self._set_state(**state, hidden=out.last_hidden_state[:, -1])  # (B, D) predicts answer row 0

    def _run_prompt(self, prompt: PromptBatch, cache=None):
        """One backbone pass over `prompt` -> its output and the per-row state it starts."""
        opts, model = self.settings.options, self.model
        past, n = (self.past if cache is not None else 0), opts.num_return_sequences
        mask, positions = prompt.attention_mask, prompt.position_ids
        ids = prompt.input_ids
        # A prompt of embeddings has no ids: `sequences` then holds the answer only, as in transformers.
        history = ids.clone() if ids is not None else mask.new_zeros(mask.shape[0], 0)
        if prompt.inputs_embeds is None and n == 1 and opts.use_cache:  # the reference path: ids and audio straight in
            out = model.model(
                input_ids=ids[:, past:], attention_mask=mask, position_ids=positions[:, past:],
                input_features=None if past else prompt.input_features,
                feature_attention_mask=None if past else prompt.feature_attention_mask,
                cache=cache, use_cache=True, **self.recorder.forward_kwargs(),
            )
        else:  # samples share their prompt's embeddings; without a cache every step re-reads them
            embeds = model.model.embed_prompt(ids, prompt.inputs_embeds, prompt.input_features,
                                              prompt.feature_attention_mask)
            if n > 1:
                embeds, mask, positions, history = (t.repeat_interleave(n, dim=0) for t in (embeds, mask, positions, history))
            out = model.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions,
                              use_cache=opts.use_cache, **self.recorder.forward_kwargs())
            self.prompt_embeds, self.prompt_positions = embeds, positions
        self.recorder.record_forward(out)
        state = dict(attention_mask=mask, next_position=positions[:, -1:] + 1, text_history=history)  # (B, 1) next
        return out, state

    def _set_state(self, attention_mask, next_position, text_history, hidden) -> None:
        batch = hidden.shape[0]
        self.batch = batch
        self.attention_mask, self.next_position, self.text_history, self.hidden = (
            attention_mask, next_position, text_history, hidden)
        self.text_done = torch.zeros(batch, dtype=torch.bool, device=self.device)
        self.speech_done = torch.full((batch,), not self.speech_mode, dtype=torch.bool, device=self.device)
        self.steps = torch.zeros(batch, dtype=torch.long, device=self.device)
        self.lived = torch.zeros(batch, dtype=torch.long, device=self.device)  # steps before the row ended
        self.start = torch.zeros(batch, dtype=torch.long, device=self.device)
        self.forced = torch.full((batch,), not self.past, dtype=torch.bool, device=self.device)
        self.speech_history = torch.full((batch, 0), self.s_pad, dtype=torch.long, device=self.device)  # (B, r·k)
        if self.continuous:
            self.latent_history = torch.zeros(batch, 0, self.head_state.latent_dim, device=self.device)  # (B, r·k, d)

    # ------------------------------------------------------------------------------------ rows join/leave

    def add_rows(self, prompt: PromptBatch) -> list[int]:
        """Prefill new conversations into the running batch; returns their row indices (appended at the end)."""
        self._check_dynamic("add_rows")
        if self.batch == 0:
            self.past = 0
            self.prefill(prompt)
            return list(range(self.batch))
        if self.past:
            raise ValueError("Rows cannot join a session that continues an earlier answer's cache (expected a fresh "
                             "session, got one started with `cache`). Start a new session for the batch.")
        self._feed_unfed()
        if self.settings.answer_rows(prompt.shape[1]) != self.max_new_tokens:
            raise ValueError("Rows that join need the session's `max_new_tokens` (expected "
                             f"{self.max_new_tokens}, got {self.settings.answer_rows(prompt.shape[1])}): pass it.")
        out, state = self._run_prompt(prompt)
        merge_caches(self.cache, out.cache, self.attention_mask.shape[1], state["attention_mask"].shape[1])
        old = self._state_tensors()
        joined_at = self.speech_history.shape[1] // self.k
        self._set_state(**state, hidden=out.last_hidden_state[:, -1])
        new = self._state_tensors()
        new["start"] = new["start"] + joined_at
        new["speech_history"] = _left_pad(new["speech_history"], old["speech_history"].shape[1], self.s_pad)
        if self.continuous:
            new["latent_history"] = _left_pad(new["latent_history"], old["latent_history"].shape[1], 0.0)
        for name in ("attention_mask", "text_history"):  # left padding keeps every row's end aligned
            width = max(old[name].shape[1], new[name].shape[1])
            pad = 0 if name == "attention_mask" else self.text_pad
            old[name], new[name] = _left_pad(old[name], width, pad), _left_pad(new[name], width, pad)
        for name, value in old.items():
            setattr(self, name, torch.cat([value, new[name]], dim=0))
        self.batch = self.hidden.shape[0]
        return list(range(self.batch - new["hidden"].shape[0], self.batch))

    def remove_rows(self, rows: list[int]) -> OmniDRCAGenerateOutput:
        """Drop `rows` from the batch (the others keep their state) and return their answers."""
        self._check_dynamic("remove_rows")
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        result = self._output(index)
        keep = torch.tensor([i for i in range(self.batch) if i not in set(rows)], dtype=torch.long, device=self.device)
        for name, value in self._state_tensors().items():
            setattr(self, name, value[keep])
        if self._unfed is not None:
            self._unfed = tuple(None if t is None else t[keep] for t in self._unfed)
        self.cache.batch_select_indices(keep)
        self.batch = int(keep.numel())
        return result

    def trim_cache(self) -> int:
        """Drop the leading KV positions that no live row attends to (left padding of rows that have left);
        returns how many. A long-running batching session stays as wide as its longest live row, not its age."""
        if self.cache is None or self.batch == 0:
            return 0
        if any(type(layer).__name__ != "DynamicLayer" for layer in self.cache.layers):
            return 0  # sliding-window/recurrent layers keep their own positions; rows cannot join those anyway
        first = int(self.attention_mask.any(0).int().argmax())  # first position some row attends to
        if first == 0:
            return 0
        self.attention_mask = self.attention_mask[:, first:]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[..., first:, :], layer.values[..., first:, :]
        return first

    def _check_dynamic(self, what: str) -> None:
        s, opts = self.settings, self.settings.options
        if not opts.use_cache or opts.num_return_sequences > 1 or opts.records_steps or s.output_logits:
            raise ValueError(
                f"`{what}` needs a KV-cached session without per-step records: expected use_cache=True, "
                f"num_return_sequences=1 and no output_scores/output_logits/output_hidden_states/output_attentions, "
                f"got use_cache={opts.use_cache}, num_return_sequences={opts.num_return_sequences}, "
                f"records_steps={opts.records_steps or s.output_logits}. Drop those settings for a batching session."
            )

    def _state_tensors(self) -> dict[str, torch.Tensor]:
        names = ["attention_mask", "next_position", "text_history", "hidden", "text_done", "speech_done", "steps",
                 "lived", "start", "forced", "speech_history"] + (["latent_history"] if self.continuous else [])
        return {name: getattr(self, name) for name in names}

    # -------------------------------------------------------------------------------------------- step

    @property
    def finished(self) -> bool:
        """Every row has ended both streams (or reached `max_new_tokens`)."""
        return self.batch == 0 or bool((self.text_done & self.speech_done).all())

    def step(self, extra_embeds: ExtraEmbeds = None) -> StreamStep:
        """One 5 Hz row for every row: text token and speech group from `hidden`, then one backbone call on them.

        `extra_embeds` ((B, D), or {row: (D,)}) is added to this row's backbone input: the full-duplex hook for
        the user's audio of the step. The backbone call is skipped when every row has ended (no next row).
        """
        self._feed_unfed()
        self.lived += ~(self.text_done & self.speech_done)
        text, text_logits, scores = self._next_text()
        self.recorder.record_step(text_logits, scores)
        self.text_done |= text == self.aeos
        group, latents = self._next_speech() if self.speech_mode else (None, None)
        self.text_history = torch.cat([self.text_history, text[:, None]], dim=1)
        self.steps += 1
        expired = self.steps >= self.max_new_tokens
        self.text_done |= expired
        self.speech_done |= expired
        pending = (text, group, latents, self._extra_tensor(extra_embeds))
        if self.finished:
            self._unfed = pending
        else:
            self._feed(*pending)
        return StreamStep(text_ids=text, speech_ids=group, speech_latents=latents)

    def _next_text(self) -> tuple[torch.LongTensor, torch.Tensor, torch.Tensor | None]:
        """(B,) text tokens of this row, the (B, Vt) raw logits and the processed scores (None when not needed)."""
        s = self.settings
        logits = self.model.lm_head(self.hidden).float()  # (B, Vt)
        masked = logits.clone()
        masked[:, self.text_banned] = -math.inf
        if s.options.min_new_tokens:  # the answer may not end before `min_new_tokens` rows
            masked[self.steps < s.options.min_new_tokens, self.aeos] = -math.inf
        forced = self.forced & (self.steps == 0)
        if bool(forced.all()):  # `<abos>` is forced whatever the head says; its scores are reported all the same
            text = torch.full((self.batch,), self.abos, dtype=torch.long, device=self.device)
            scores = s.text_processors(self.text_history, masked) if s.options.output_scores else None
            return text, logits, scores
        text, scores = choose_tokens(masked, self.text_history, s.text_processors, s.text.do_sample, s.generator)
        text = text.masked_fill(self.text_done, self.text_pad)
        return text.masked_fill(forced, self.abos), logits, scores

    def _next_speech(self) -> tuple[torch.LongTensor, torch.Tensor | None]:
        """(B, k) speech group of this row from the speech head (and its (B, k, d) latents for a continuous head)."""
        waiting = self.steps < self.delay  # the delay's `[bos]` groups
        active = ~self.speech_done & ~waiting
        latent_history = self.latent_history if self.continuous else None
        reads_text = getattr(self.head_state, "reads_text", False)  # the SRH's tracker reads the answer's text
        text = dict(text_history=self.text_history, start=self.start) if reads_text else {}
        group, latents, logits = self.head_state.next_group(self.hidden, self.speech_history, latent_history, active,
                                                            **text)
        if logits is not None:
            self.speech_logits.append(logits)  # (B, k, Vs)
        group = group.masked_fill(waiting[:, None], self.s_bos)  # (B, k)
        self.speech_done |= (group == self.s_eos).any(-1)
        self.speech_history = torch.cat([self.speech_history, group], dim=1)
        if self.continuous:
            self.latent_history = torch.cat([self.latent_history, latents], dim=1)
        return group, latents

    def _extra_tensor(self, extra_embeds: ExtraEmbeds) -> torch.Tensor | None:
        if extra_embeds is None or isinstance(extra_embeds, torch.Tensor):
            if extra_embeds is not None and tuple(extra_embeds.shape) != (self.batch, self.hidden.shape[-1]):
                raise ValueError(f"`extra_embeds` must be (batch, hidden) = {(self.batch, self.hidden.shape[-1])}, "
                                 f"got {tuple(extra_embeds.shape)}; or pass {{row: (hidden,) tensor}}.")
            return extra_embeds
        extra = self.hidden.new_zeros(self.batch, self.hidden.shape[-1])  # (B, D)
        for row, embed in extra_embeds.items():
            extra[row] = embed
        return extra

    def _feed_unfed(self) -> None:
        if self._unfed is not None and self.batch:
            pending, self._unfed = self._unfed, None
            self._feed(*pending)
        self._unfed = None

    def _feed(self, text, group, latents, extra) -> None:
        """One backbone call on this row (text + speech group [+ extra]) -> the hidden state of the next row."""
        opts, model, batch = self.settings.options, self.model, self.batch
        self.attention_mask = torch.cat([self.attention_mask, self.attention_mask.new_ones(batch, 1)], dim=1)
        speech = {}
        if self.speech_mode:
            speech["speech_ids"] = gate_speech_ids(model.config, text[:, None], group[:, None])  # (B, 1, k)
            if self.continuous:
                speech["speech_latents"] = latents[:, None]  # (B, 1, k, d)
        if opts.use_cache:
            tokens = {"input_ids": text[:, None]}
            if extra is not None:  # the step's extra input (full duplex: the user's audio) joins the text embedding
                embeds = model.model.get_input_embeddings()(text[:, None])  # (B, 1, D)
                tokens = {"inputs_embeds": embeds + extra[:, None].to(embeds.dtype)}
            out = model.model(**tokens, **speech, attention_mask=self.attention_mask, position_ids=self.next_position,
                              cache=self.cache, use_cache=True, **self.recorder.forward_kwargs())
            self.cache = out.cache
        else:
            if extra is not None:
                raise ValueError("`extra_embeds` need a KV-cached session (use_cache=True): the uncached path "
                                 "re-reads every earlier row and does not keep their extra embeddings.")
            out = self._forward_everything()
        self.recorder.record_forward(out)
        self.hidden = out.last_hidden_state[:, -1]  # (B, D) predicts the next row
        self.next_position = self.next_position + 1

    def _forward_everything(self):
        """Without a cache: the whole sequence again, prompt then every answer row so far (rows move in step)."""
        batch, k, model = self.batch, self.k, self.model
        rows = int(self.steps[0])
        prompt_length = self.prompt_embeds.shape[1]
        speech = {}
        if self.speech_mode:
            prompt_groups = torch.full((batch, prompt_length, k), self.s_pad, dtype=torch.long, device=self.device)
            answer_groups = gate_speech_ids(model.config, self.text_history[:, -rows:],
                                            self.speech_history.view(batch, rows, k))  # (B, rows, k)
            speech["speech_ids"] = torch.cat([prompt_groups, answer_groups], dim=1)
            if self.continuous:
                latents = self.latent_history.view(batch, rows, k, -1)  # (B, rows, k, d)
                speech["speech_latents"] = torch.cat([latents.new_zeros(batch, prompt_length, *latents.shape[2:]),
                                                      latents], 1)
        answer = model.model.get_input_embeddings()(self.text_history[:, -rows:])  # (B, rows, D)
        steps = self.next_position + torch.arange(rows, device=self.device) - (rows - 1)  # (B, rows)
        return model.model(
            inputs_embeds=torch.cat([self.prompt_embeds, answer.to(self.prompt_embeds.dtype)], dim=1),
            attention_mask=self.attention_mask, position_ids=torch.cat([self.prompt_positions, steps], dim=1),
            use_cache=False, **speech, **self.recorder.forward_kwargs(),
        )

    # ------------------------------------------------------------------------------------------ finish

    def finish(self) -> OmniDRCAGenerateOutput | torch.LongTensor:
        """The output of every row (the text ids only with `return_dict_in_generate=False`)."""
        result = self._output(torch.arange(self.batch, device=self.device), cache=self.cache)
        self.recorder.fill(result)  # scores / logits / hidden_states / attentions, as requested
        if self.speech_logits:
            result.speech_logits = torch.stack(self.speech_logits, dim=1)  # (B, S, k, Vs)
        return result.sequences if self.settings.options.return_dict_in_generate is False else result

    def _output(self, index: torch.LongTensor, cache=None) -> OmniDRCAGenerateOutput:
        result = OmniDRCAGenerateOutput(sequences=self.text_history[index], cache=cache)
        if not self.speech_mode:
            return result
        speech = self._answer_speech(self.speech_history[index], self.start[index], self.s_pad)  # (n, T)
        is_eos = speech == self.s_eos
        width = torch.full((speech.shape[0],), speech.shape[1], dtype=torch.long, device=speech.device)
        # a row that leaves within its speech delay has no speech yet (argmax needs a non-empty axis)
        ends = torch.where(is_eos.any(-1), is_eos.int().argmax(-1), width) if speech.shape[1] else width
        # a row that reached `max_new_tokens` while others ran on holds [pad] groups past its last real one
        ends = torch.minimum(ends, (self.lived[index] - self.delay).clamp(min=0) * self.k)
        result.speech_ids, result.speech_lengths = speech, ends
        if self.continuous:
            result.speech_latents = self._answer_speech(self.latent_history[index], self.start[index], 0.0)
        if self.settings.return_waveform:
            result.waveform, result.waveform_lengths = self.head_state.decode(speech, result.speech_latents, ends)
        return result

    def _answer_speech(self, history: torch.Tensor, start: torch.LongTensor, pad) -> torch.Tensor:
        """(n, R·k, ...) history -> (n, T, ...) each row's speech after its delay, left-aligned, padded on the right."""
        offsets = ((start + self.delay) * self.k).tolist()
        if len(set(offsets)) <= 1:  # rows that started together: one slice drops the delay's bos groups
            return history[:, offsets[0] if offsets else 0 :]
        rows = [history[i, offset:] for i, offset in enumerate(offsets)]
        width = max(row.shape[0] for row in rows)
        out = history.new_full((len(rows), width, *history.shape[2:]), pad)
        for i, row in enumerate(rows):
            out[i, : row.shape[0]] = row
        return out


__all__ = ["GenerationSession"]
