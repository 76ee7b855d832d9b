"""Continuous batching: one engine thread owns the model and steps shared generation sessions.

```
 submit(ChatRequest) ─► waiting room (bounded: EngineBusy when full; a worker thread tokenizes each request and
                        encodes its audio as it arrives, alongside the steps) ─► engine thread
 engine thread, every iteration:
   admit   prepared requests, up to `max_joins` at a time and `max_batch` live rows: pad their embeddings
           together, `session.add_rows` (one session per sampling setting: its rows share sampling and mode)
   step    every session one 5 Hz row (`session.step()`); each row's streamer turns it into text/audio events
   leave   rows whose streams ended, that hit their `max_tokens`, timed out or were cancelled: `remove_rows`,
           then `trim_cache` drops the KV positions no live row attends to
```

A short answer leaves as soon as it ends, and a new request joins at the next step: nobody waits for the longest
answer of a batch. Events reach the caller through its `RequestHandle`, iterated from a thread or an event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass

import torch

from modeling_omnidrca.generation_session import GenerationSession
from modeling_omnidrca.generation_settings import GenerationSettings, PromptBatch, StreamStep
from modeling_omnidrca.streaming_omnidrca import OmniDRCAStreamer, decode_streams

from .admission import Refused, WaitingRoom
from .engine_types import (
    MODES,
    AudioDelta,
    ChatRequest,
    EngineBusy,
    Event,
    Failed,
    Finished,
    RequestHandle,
    SamplingParams,
    TextDelta,
    Usage,
)

logger = logging.getLogger(__name__)


@dataclass
class _Row:
    """A request while it has a row in a session."""

    handle: RequestHandle
    streamer: OmniDRCAStreamer
    prompt_tokens: int
    prompt_audio_tokens: int
    steps: int = 0
    audio_codes: int = 0


@dataclass
class _Live:
    session: GenerationSession
    rows: list[_Row]  # index i is the session's row i


class Engine:
    """Owns a model and its processor; answers `ChatRequest`s with continuous batching in one thread.

    Args:
        max_batch: most rows generated together (all sessions). `max_batch=1` serves one request at a time.
        max_joins: most requests prefilled between two steps: a burst of arrivals joins over a few steps
            instead of stalling every running answer for all of their prefills at once.
        max_queue: most requests waiting to join; `submit` raises `EngineBusy` beyond it.
        max_new_tokens: the longest answer in 5 Hz steps (each session's limit; requests may ask for fewer).
        first_chunk_steps, chunk_steps: the first audio chunk holds `first_chunk_steps` steps (0.2 s of speech
            each; small: the first sound comes early), later ones `chunk_steps` (larger: each chunk re-decodes the
            codec's context on both sides, so longer chunks cost less per second of speech).
        timeout: default seconds a request may take from submission to its last event.
        torch_threads: intra-op threads of this process's torch (one is fastest for small batches on a CPU).
        max_context: most positions a conversation and its answer may take (default: the backbone's
            `max_position_embeddings`); longer ones are refused with a 400 before they reach the batch.
    """

    def __init__(self, model, processor, *, max_batch: int = 32, max_queue: int = 64, max_new_tokens: int = 256,
                 max_joins: int = 4, first_chunk_steps: int = 2, chunk_steps: int = 5, timeout: float = 120.0,
                 torch_threads: int | None = 1, max_context: int | None = None):
        for name, value in (("max_batch", max_batch), ("max_queue", max_queue), ("max_new_tokens", max_new_tokens),
                            ("max_joins", max_joins), ("first_chunk_steps", first_chunk_steps),
                            ("chunk_steps", chunk_steps)):
            if int(value) < 1:
                raise ValueError(f"{name} must be at least 1, got {value}.")
        self.model, self.processor = model, processor
        self.max_batch, self.max_new_tokens, self.chunk_steps = int(max_batch), int(max_new_tokens), int(chunk_steps)
        self.max_joins, self.first_chunk_steps = int(max_joins), int(first_chunk_steps)
        self.timeout, self.torch_threads = float(timeout), torch_threads
        self.sampling_rate = int(model.speech_codec.config.sampling_rate)
        # positions the backbone has: a prompt plus its answer (one position per 5 Hz step) must fit
        self.context_length = max_context or getattr(model.config.get_text_config(), "max_position_embeddings", None)
        self.max_queue = int(max_queue)
        self._waiting: WaitingRoom | None = None
        self._sessions: dict[tuple, _Live] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.steps = 0  # session steps taken, for /health and tests
        self.largest_batch = 0

    # ------------------------------------------------------------------------------------------ public

    def start(self) -> Engine:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._waiting = WaitingRoom(self._prepare, self.max_queue)
            self._thread = threading.Thread(target=self._run, name="omnidrca-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._fail_everyone(503, "The server is shutting down.", "server_shutdown")
        if self._waiting is not None:
            self._waiting.close()

    def submit(self, request: ChatRequest, loop: asyncio.AbstractEventLoop | None = None) -> RequestHandle:
        """Queue `request`; pass the running event loop to iterate the handle with `async for`."""
        if not self.running:
            raise RuntimeError("The engine is not running: call `engine.start()` first.")
        handle = RequestHandle(request, loop)
        self._waiting.put(handle)  # EngineBusy when the waiting room is full
        return handle

    @property
    def running(self) -> bool:
        """The engine thread is alive (a health check restarts a server whose engine died)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def live_rows(self) -> int:
        # list(): one step under the GIL, so other threads (/health) never see the dict change while iterating
        return sum(len(live.rows) for live in list(self._sessions.values()))

    def stats(self) -> dict:
        return {"live_rows": self.live_rows, "queued": len(self._waiting or ()), "sessions": len(self._sessions),
                "steps": self.steps, "largest_batch": self.largest_batch, "max_batch": self.max_batch}

    # ------------------------------------------------------------------------------------- the thread

    def _run(self) -> None:
        if self.torch_threads:
            torch.set_num_threads(int(self.torch_threads))
        while not self._stop.is_set():
            try:
                with torch.inference_mode():
                    self._admit(block=not self._sessions)
                    for key in list(self._sessions):
                        self._step(key)
            except Exception as error:  # a bug must not kill the thread that every request waits on
                logger.exception("engine iteration failed")
                self._fail_everyone(500, "The model failed while answering; see the server log.", "engine_error",
                                    error)

    def _admit(self, block: bool) -> None:
        """Move prepared requests into sessions while rows are free (waits briefly when nothing is running)."""
        free = min(self.max_batch - self.live_rows, self.max_joins)
        joining: dict[tuple, list[tuple[RequestHandle, dict]]] = {}
        for handle, inputs in self._waiting.take(free, wait=0.05 if block else 0.0) if free > 0 else []:
            if isinstance(inputs, Failed):
                handle.emit(inputs)
            elif not self._expired(handle):
                request = handle.request
                key = (request.mode, request.sampling.session_key()) + ((handle.id,) if request.sampling.seeded else ())
                joining.setdefault(key, []).append((handle, inputs))
        for key, group in joining.items():
            try:
                self._join(key, group)
            except Exception as error:  # the prefill failed: these requests, and the session it may have left
                logger.exception("prefill failed")  # half-updated, end; other sessions run on
                broken = self._sessions.pop(key, None)
                handles = [handle for handle, _ in group] + ([row.handle for row in broken.rows] if broken else [])
                for handle in dict.fromkeys(handles):
                    handle.emit(Failed(500, "The model failed while reading the prompt; see the server log.",
                                       "engine_error", error))

    def _prepare(self, request: ChatRequest) -> dict:
        """On the waiting room's worker: the prompt's ids and embeddings, its audio encoded (`Refused` if it
        cannot join)."""
        inputs = self.processor.apply_chat_template(request.conversation, add_generation_prompt=True, tokenize=True,
                                                    return_dict=True, return_tensors="pt")
        self._check_length(request, inputs["input_ids"].shape[1])
        device = self.model.device
        ids, mask = inputs["input_ids"].to(device), inputs["attention_mask"].to(device)
        features, feature_mask = inputs.get("input_features"), inputs.get("feature_attention_mask")
        with torch.inference_mode():
            embeds = self.model.model.embed_prompt(  # (1, L, D), the audio placed at its slots
                ids, None, None if features is None else features.to(device, self.model.dtype),
                None if feature_mask is None else feature_mask.to(device))
        return {"input_ids": ids, "attention_mask": mask, "inputs_embeds": embeds,
                "audio_slots": int((ids == self.model.config.stream_layout.audio_token_id).sum())}

    def _check_length(self, request: ChatRequest, prompt_tokens: int) -> None:
        answer = request.max_tokens or self.max_new_tokens
        if self.context_length is not None and prompt_tokens + answer > self.context_length:
            raise Refused(Failed(400, f"The conversation is {prompt_tokens} tokens; with up to {answer} answer steps "
                                 f"it exceeds the model's context of {self.context_length} positions. Send fewer or "
                                 "shorter turns, or a smaller max_tokens.", "context_length_exceeded"))

    def _join(self, key: tuple, group: list[tuple[RequestHandle, dict]]) -> None:
        live = self._sessions.get(key)
        if live is None:
            mode, request = key[0], group[0][0].request
            settings = GenerationSettings.resolve(self.model, generation_mode=mode, max_new_tokens=self.max_new_tokens,
                                                  return_waveform=False, **request.sampling.generate_kwargs())
            live = self._sessions[key] = _Live(GenerationSession(self.model, settings), [])
        live.session.add_rows(stack_prompts([inputs for _, inputs in group], self.processor.tokenizer.pad_token_id))
        codec = self.model.speech_codec if key[0] == "audio" else None
        for handle, inputs in group:
            streamer = OmniDRCAStreamer(self.processor, codec=codec, chunk_steps=self.chunk_steps, defer_audio=True,
                                        first_chunk_steps=self.first_chunk_steps,
                                        snap_to_codebook=live.session.head_state.snap_to_codebook)
            live.rows.append(_Row(handle, streamer, int(inputs["attention_mask"].sum()), inputs["audio_slots"]))
        self.largest_batch = max(self.largest_batch, self.live_rows)

    def _step(self, key: tuple) -> None:
        live = self._sessions[key]
        session = live.session
        step = session.step()
        self.steps += 1
        done = (session.text_done & session.speech_done).tolist()
        leaving: list[int] = []
        for i, row in enumerate(live.rows):
            row.steps += 1
            piece = StreamStep(step.text_ids[i : i + 1], None if step.speech_ids is None else step.speech_ids[i : i + 1],
                               None if step.speech_latents is None else step.speech_latents[i : i + 1])
            if step.speech_ids is not None and not row.streamer.speech_ended:
                row.audio_codes += len(self.processor.speech_codes(step.speech_ids[i].tolist()))
            row.streamer.put_step(piece)
        decode_streams([row.streamer for row in live.rows])  # the rows' audio chunks in one codec call
        for i, row in enumerate(live.rows):
            self._forward(row)
            limit = row.handle.request.max_tokens or self.max_new_tokens
            if done[i] or row.steps >= limit:
                self._finish(row, "stop" if done[i] and row.streamer.text_ended else "length")
                leaving.append(i)
            elif row.handle.cancelled.is_set() or self._expired(row.handle):
                leaving.append(i)
        if leaving:
            session.remove_rows(leaving)
            gone = set(leaving)
            live.rows = [row for i, row in enumerate(live.rows) if i not in gone]
            if live.rows:
                session.trim_cache()
            else:  # a new session starts with the next request of this kind
                del self._sessions[key]

    def _forward(self, row: _Row) -> None:
        for piece in row.streamer.drain():
            if piece.text:
                row.handle.emit(TextDelta(piece.text))
            if piece.audio is not None and piece.audio.size:
                row.handle.emit(AudioDelta(piece.audio))

    def _finish(self, row: _Row, reason: str) -> None:
        text_ids = list(row.streamer.text_ids)
        row.streamer.end()
        self._forward(row)
        text = self.processor.tokenizer.decode(text_ids, skip_special_tokens=True)
        usage = Usage(row.prompt_tokens, len(text_ids), row.prompt_audio_tokens, row.audio_codes)
        row.handle.emit(Finished(text, reason, usage))

    def _expired(self, handle: RequestHandle) -> bool:
        limit = handle.request.timeout if handle.request.timeout is not None else self.timeout
        if time.monotonic() - handle.submitted <= limit:
            return False
        handle.emit(Failed(408, f"The request took longer than its {limit:g} s limit and was stopped.", "timeout"))
        return True

    def _fail_everyone(self, status: int, message: str, code: str, error: BaseException | None = None) -> None:
        for live in self._sessions.values():
            for row in live.rows:
                row.handle.emit(Failed(status, message, code, error))
        self._sessions.clear()
        if error is None and self._waiting is not None:  # stopping: nobody waiting will be answered
            for handle in self._waiting.drain():
                handle.emit(Failed(status, message, code))


def stack_prompts(inputs: list[dict], pad_token_id: int) -> PromptBatch:
    """Left-pad separately prepared prompts (ids, mask, embeddings) into one batch."""
    width = max(x["input_ids"].shape[1] for x in inputs)

    def pad(tensor: torch.Tensor, value) -> torch.Tensor:
        missing = width - tensor.shape[1]
        return torch.nn.functional.pad(tensor, (0, 0, missing, 0) if tensor.dim() == 3 else (missing, 0), value=value)

    return PromptBatch.check(input_ids=torch.cat([pad(x["input_ids"], pad_token_id) for x in inputs]),
                             attention_mask=torch.cat([pad(x["attention_mask"], 0) for x in inputs]),
                             inputs_embeds=torch.cat([pad(x["inputs_embeds"], 0.0) for x in inputs]))


# The request and event types live in engine_types (the waiting room needs them too); they are exported here as
# the engine's interface.
__all__ = ["MODES", "AudioDelta", "ChatRequest", "Engine", "EngineBusy", "Event", "Failed", "Finished",
           "RequestHandle", "SamplingParams", "TextDelta", "Usage", "stack_prompts"]
