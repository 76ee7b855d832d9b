"""What the engine takes and gives: requests, their sampling, the events a request's handle yields, and the
handle itself (iterated from a thread or an event loop)."""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import numpy as np

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


__all__ = ["MODES", "AudioDelta", "ChatRequest", "EngineBusy", "Event", "Failed", "Finished", "RequestHandle",
           "SamplingParams", "TextDelta", "Usage"]
