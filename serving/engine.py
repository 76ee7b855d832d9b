"""Continuous batching: one engine thread owns the model and steps shared generation sessions.

```
 submit(ChatRequest) ─► bounded queue (EngineBusy when full) ─► engine thread
 engine thread, every iteration:
   admit   queued requests, up to `max_batch` live rows: tokenize each, pad them together, `session.add_rows`
           (one session per sampling setting: rows of a session share its sampling and mode)
   step    every session one 5 Hz row (`session.step()`); each row's streamer turns it into text/audio events
   leave   rows whose streams ended, that hit their `max_tokens`, timed out or were cancelled: `remove_rows`,
           then `trim_cache` drops the KV positions no live row attends to
```

A short answer leaves as soon as it ends, and a new request joins at the next step: nobody waits for the longest
answer of a batch. Events reach the caller through its `RequestHandle`, iterated from a thread or an event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from modeling_omnidrca.generation_session import GenerationSession
from modeling_omnidrca.generation_settings import GenerationSettings, PromptBatch, StreamStep
from modeling_omnidrca.streaming_omnidrca import OmniDRCAStreamer, decode_streams

logger = logging.getLogger(__name__)
MODES = ("text", "audio")


class EngineBusy(RuntimeError):
    """The engine's queue is full: the caller should answer 429 and let the client retry."""


@dataclass(frozen=True)
class SamplingParams:
    """How a request samples. Greedy unless `temperature` > 0 (the demo's evaluated setting is greedy)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None

    @property
    def do_sample(self) -> bool:
        return bool(self.temperature)

    @property
    def seeded(self) -> bool:
        """A seeded sampled request runs in a session of its own: the draws of a shared batch depend on who else
        is in it, so only a session of its own reproduces the seed."""
        return self.do_sample and self.seed is not None

    def session_key(self) -> tuple:
        """Requests with equal keys (and no seed) share a session."""
        if not self.do_sample:
            return ("greedy",)
        return ("sample", float(self.temperature), self.top_p, self.top_k)

    def generate_kwargs(self) -> dict:
        if not self.do_sample:
            return {"do_sample": False}
        kwargs = {"do_sample": True, "temperature": float(self.temperature)}
        if self.top_p is not None:
            kwargs["top_p"] = float(self.top_p)
        if self.top_k:
            kwargs["top_k"] = int(self.top_k)
        if self.seed is not None:
            kwargs["seed"] = int(self.seed)
        return kwargs


@dataclass
class ChatRequest:
    """One conversation to answer: the processor's chat format (audio items hold float arrays)."""

    conversation: list[dict]
    mode: str = "text"  # "text", or "audio" for text and speech
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = None  # answer rows (5 Hz steps); None: the engine's limit
    timeout: float | None = None  # seconds from submission; None: the engine's

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}.")
        if self.max_tokens is not None and int(self.max_tokens) < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}.")


@dataclass
class TextDelta:
    text: str


@dataclass
class AudioDelta:
    audio: np.ndarray  # float32 mono at the engine's `sampling_rate`


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int
    prompt_audio_tokens: int = 0
    completion_audio_tokens: int = 0


@dataclass
class Finished:
    text: str
    finish_reason: str  # "stop": the answer ended; "length": it reached max_tokens
    usage: Usage


@dataclass
class Failed:
    status: int  # the HTTP status it maps to (400 bad request, 408 timeout, 500 engine error)
    message: str
    code: str
    error: BaseException | None = None  # what was raised, for in-process callers (never sent to HTTP clients)


Event = TextDelta | AudioDelta | Finished | Failed


class RequestHandle:
    """A submitted request: iterate its events (ending with `Finished` or `Failed`), or `cancel()` it."""

    _ids = itertools.count()

    def __init__(self, request: ChatRequest, loop: asyncio.AbstractEventLoop | None):
        self.id = f"req-{next(self._ids)}"
        self.request = request
        self.submitted = time.monotonic()
        self.cancelled = threading.Event()
        self._loop = loop
        self._queue: asyncio.Queue | queue.Queue = asyncio.Queue() if loop is not None else queue.Queue()

    def cancel(self) -> None:
        """Stop generating (the client went away); the row leaves at the engine's next step."""
        self.cancelled.set()

    def emit(self, event: Event) -> None:  # called by the engine thread
        if self._loop is None:
            self._queue.put(event)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)

    async def next(self, timeout: float) -> Event | None:
        """The next event, or None after `timeout` seconds (a server checks for a gone client in between)."""
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except asyncio.TimeoutError:
            return None

    def __iter__(self) -> Iterator[Event]:
        if self._loop is not None:
            raise TypeError("This handle was submitted with an event loop: iterate it with `async for`.")
        while True:
            event = self._queue.get()
            yield event
            if isinstance(event, (Finished, Failed)):
                return

    async def __aiter__(self) -> AsyncIterator[Event]:
        if self._loop is None:
            raise TypeError("This handle was submitted without an event loop: iterate it with `for`.")
        while True:
            event = await self._queue.get()
            yield event
            if isinstance(event, (Finished, Failed)):
                return


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
        chunk_steps: audio is decoded and sent every this many steps (0.2 s of speech each).
        timeout: default seconds a request may take from submission to its last event.
        torch_threads: intra-op threads of this process's torch (one is fastest for small batches on a CPU).
        max_context: most positions a conversation and its answer may take (default: the backbone's
            `max_position_embeddings`); longer ones are refused with a 400 before they reach the batch.
    """

    def __init__(self, model, processor, *, max_batch: int = 32, max_queue: int = 64, max_new_tokens: int = 256,
                 max_joins: int = 4, chunk_steps: int = 2, timeout: float = 120.0, torch_threads: int | None = 1,
                 max_context: int | None = None):
        for name, value in (("max_batch", max_batch), ("max_queue", max_queue), ("max_new_tokens", max_new_tokens),
                            ("max_joins", max_joins), ("chunk_steps", chunk_steps)):
            if int(value) < 1:
                raise ValueError(f"{name} must be at least 1, got {value}.")
        self.model, self.processor = model, processor
        self.max_batch, self.max_new_tokens, self.chunk_steps = int(max_batch), int(max_new_tokens), int(chunk_steps)
        self.max_joins = int(max_joins)
        self.timeout, self.torch_threads = float(timeout), torch_threads
        self.sampling_rate = int(model.speech_codec.config.sampling_rate)
        # positions the backbone has: a prompt plus its answer (one position per 5 Hz step) must fit
        self.context_length = max_context or getattr(model.config.get_text_config(), "max_position_embeddings", None)
        self._queue: queue.Queue[RequestHandle] = queue.Queue(maxsize=int(max_queue))
        self._sessions: dict[tuple, _Live] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.steps = 0  # session steps taken, for /health and tests
        self.largest_batch = 0

    # ------------------------------------------------------------------------------------------ public

    def start(self) -> Engine:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="omnidrca-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._fail_everyone(503, "The server is shutting down.", "server_shutdown")

    def submit(self, request: ChatRequest, loop: asyncio.AbstractEventLoop | None = None) -> RequestHandle:
        """Queue `request`; pass the running event loop to iterate the handle with `async for`."""
        if not self.running:
            raise RuntimeError("The engine is not running: call `engine.start()` first.")
        handle = RequestHandle(request, loop)
        try:
            self._queue.put_nowait(handle)
        except queue.Full:
            raise EngineBusy(f"The server is busy ({self._queue.maxsize} requests already waiting); retry shortly.")
        return handle

    @property
    def running(self) -> bool:
        """The engine thread is alive (a health check restarts a server whose engine died)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def live_rows(self) -> int:
        return sum(len(live.rows) for live in self._sessions.values())

    def stats(self) -> dict:
        return {"live_rows": self.live_rows, "queued": self._queue.qsize(), "sessions": len(self._sessions),
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
        """Move queued requests into sessions while rows are free (waits briefly when nothing is running)."""
        joining: dict[tuple, list[tuple[RequestHandle, dict]]] = {}
        free = min(self.max_batch - self.live_rows, self.max_joins)
        while free > 0:
            try:
                handle = self._queue.get(timeout=0.05) if block and not joining else self._queue.get_nowait()
            except queue.Empty:
                break
            if handle.cancelled.is_set():
                continue
            if self._expired(handle):
                continue
            try:
                inputs = self._tokenize(handle.request)
            except (ValueError, TypeError, KeyError) as error:
                handle.emit(Failed(400, f"Could not build the prompt: {error}", "invalid_prompt"))
                continue
            if self._too_long(handle, inputs["input_ids"].shape[1]):
                continue
            request = handle.request
            key = (request.mode, request.sampling.session_key()) + ((handle.id,) if request.sampling.seeded else ())
            joining.setdefault(key, []).append((handle, inputs))
            free -= 1
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

    def _too_long(self, handle: RequestHandle, prompt_tokens: int) -> bool:
        answer = handle.request.max_tokens or self.max_new_tokens
        if self.context_length is None or prompt_tokens + answer <= self.context_length:
            return False
        handle.emit(Failed(400, f"The conversation is {prompt_tokens} tokens; with up to {answer} answer steps it "
                           f"exceeds the model's context of {self.context_length} positions. Send fewer or shorter "
                           "turns, or a smaller max_tokens.", "context_length_exceeded"))
        return True

    def _tokenize(self, request: ChatRequest) -> dict:
        return self.processor.apply_chat_template(request.conversation, add_generation_prompt=True, tokenize=True,
                                                  return_dict=True, return_tensors="pt")

    def _join(self, key: tuple, group: list[tuple[RequestHandle, dict]]) -> None:
        live = self._sessions.get(key)
        if live is None:
            mode, request = key[0], group[0][0].request
            settings = GenerationSettings.resolve(self.model, generation_mode=mode, max_new_tokens=self.max_new_tokens,
                                                  return_waveform=False, **request.sampling.generate_kwargs())
            live = self._sessions[key] = _Live(GenerationSession(self.model, settings), [])
        prompt = stack_prompts([inputs for _, inputs in group], self.processor.tokenizer.pad_token_id, self.model.device)
        live.session.add_rows(prompt)
        codec = self.model.speech_codec if key[0] == "audio" else None
        for handle, inputs in group:
            streamer = OmniDRCAStreamer(self.processor, codec=codec, chunk_steps=self.chunk_steps, defer_audio=True,
                                        snap_to_codebook=live.session.head_state.snap_to_codebook)
            audio_slots = int((inputs["input_ids"] == self.model.config.stream_layout.audio_token_id).sum())
            live.rows.append(_Row(handle, streamer, int(inputs["attention_mask"].sum()), audio_slots))
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
        if error is not None:  # a failed step: the queued requests have not been tried, they may still succeed
            return
        while True:
            try:
                self._queue.get_nowait().emit(Failed(status, message, code))
            except queue.Empty:
                return


def stack_prompts(inputs: list[dict], pad_token_id: int, device: torch.device | str = "cpu") -> PromptBatch:
    """Left-pad separately tokenized prompts into one batch (clips padded to the longest in frames)."""
    width = max(x["input_ids"].shape[1] for x in inputs)
    ids, masks, features, feature_masks = [], [], [], []
    for x in inputs:
        missing = width - x["input_ids"].shape[1]
        ids.append(torch.nn.functional.pad(x["input_ids"], (missing, 0), value=pad_token_id))
        masks.append(torch.nn.functional.pad(x["attention_mask"], (missing, 0), value=0))
        if x.get("input_features") is not None:
            features.append(x["input_features"])
            feature_masks.append(x["feature_attention_mask"])
    batch = dict(input_ids=torch.cat(ids), attention_mask=torch.cat(masks))
    if features:
        frames = max(f.shape[-1] for f in features)
        batch["input_features"] = torch.cat([torch.nn.functional.pad(f, (0, frames - f.shape[-1])) for f in features])
        batch["feature_attention_mask"] = torch.cat(
            [torch.nn.functional.pad(m, (0, frames - m.shape[-1])) for m in feature_masks])
    return PromptBatch.check(**{name: value.to(device) for name, value in batch.items()})


__all__ = ["AudioDelta", "ChatRequest", "Engine", "EngineBusy", "Failed", "Finished", "RequestHandle",
           "SamplingParams", "TextDelta", "Usage", "stack_prompts"]
