"""The waiting room in front of the engine: a bounded line of requests, each prepared as soon as it arrives.

Preparing a request (the chat template, the tokenizer and, above all, the Whisper encoder over its audio) runs on
a worker thread, so it overlaps the engine thread's steps instead of stalling every running answer: torch releases
the GIL inside its kernels, and on a CPU the worker gets a core of its own. The engine thread then only runs the
backbone over the prepared embeddings when the request joins.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from .engine_types import ChatRequest, EngineBusy, Failed, RequestHandle

logger = logging.getLogger(__name__)


class Refused(Exception):
    """A request that cannot join (its prompt does not build, or is too long); carries the event to send."""

    def __init__(self, failed: Failed):
        super().__init__(failed.message)
        self.failed = failed


class WaitingRoom:
    """Requests waiting for a row, in arrival order; `take` hands over those whose preparation has finished."""

    def __init__(self, prepare: Callable[[ChatRequest], dict], max_size: int, workers: int = 1):
        self.prepare, self.max_size = prepare, int(max_size)
        self._line: deque[tuple[RequestHandle, Future]] = deque()
        self._lock = threading.Condition()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="omnidrca-prepare")

    def __len__(self) -> int:
        return len(self._line)

    def put(self, handle: RequestHandle) -> None:
        with self._lock:
            if len(self._line) >= self.max_size:
                raise EngineBusy(f"The server is busy ({self.max_size} requests already waiting); retry shortly.")
            future = self._pool.submit(self.prepare, handle.request)
            future.add_done_callback(lambda _: self._wake())
            self._line.append((handle, future))
            self._lock.notify_all()

    def _wake(self) -> None:
        with self._lock:
            self._lock.notify_all()

    def take(self, limit: int, wait: float = 0.0) -> list[tuple[RequestHandle, dict | Failed]]:
        """Up to `limit` prepared requests (their inputs, or the `Failed` to send), oldest first; cancelled ones are
        dropped. Waits up to `wait` seconds for the first when none is ready."""
        with self._lock:
            ready = self._ready(limit)
            if not ready and wait > 0:
                self._lock.wait(wait)
                ready = self._ready(limit)
            return ready

    def _ready(self, limit: int) -> list[tuple[RequestHandle, dict | Failed]]:
        out, kept = [], deque()
        while self._line:
            handle, future = self._line.popleft()
            if handle.cancelled.is_set():
                future.cancel()
            elif future.done() and len(out) < limit:
                out.append((handle, _outcome(future)))
            else:
                kept.append((handle, future))
        self._line = kept
        return out

    def drain(self) -> list[RequestHandle]:
        """Everyone still waiting (the engine is stopping or failed)."""
        with self._lock:
            handles = [handle for handle, future in self._line]
            for _, future in self._line:
                future.cancel()
            self._line.clear()
            return handles

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _outcome(future: Future) -> dict | Failed:
    error = future.exception()
    if error is None:
        return future.result()
    if isinstance(error, Refused):
        return error.failed
    if isinstance(error, (ValueError, TypeError, KeyError)):  # the client's conversation does not build
        return Failed(400, f"Could not build the prompt: {error}", "invalid_prompt")
    logger.error("preparing a request failed", exc_info=error)
    return Failed(500, "The model failed while reading the prompt; see the server log.", "engine_error", error)


__all__ = ["Refused", "WaitingRoom"]
