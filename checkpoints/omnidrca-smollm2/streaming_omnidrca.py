"""Streaming: answer text and audio chunks while generation runs, decoded incrementally by the speech codec.

`OmniDRCAStreamer` turns the session's rows (`StreamStep`) into `StreamPiece`s; `IncrementalSpeechDecoder` decodes
a growing stream of codes (or continuous latents) in chunks that join into the full decode, using the codec
decoder's receptive field (`receptive_radius_codes`) as context.
"""

from __future__ import annotations

import math
import queue
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np
import torch

from .generation_settings import StreamStep


class StreamPiece(NamedTuple):
    """What a streamer yields: new answer text, and new audio (float32 at the codec's rate) or None."""

    text: str
    audio: np.ndarray | None


class IncrementalSpeechDecoder:
    """Decodes a growing stream of codec codes (or, with `continuous=True`, codec latent frames) into audio
    chunks that join into the full decode.

    The codec's decoder is convolutional, so a code only influences samples within its receptive field.
    Each chunk is decoded from a window with `context_codes` codes on each side; with the default
    (the decoder's receptive radius, iSTFT vocoder) the joined chunks equal decoding everything at once
    up to float rounding. Smaller values lower the latency of the first chunk at some boundary error.
    """

    def __init__(self, codec, chunk_codes: int, context_codes: int | None = None, continuous: bool = False,
                 first_chunk_codes: int | None = None):
        if chunk_codes < 1 or (first_chunk_codes is not None and first_chunk_codes < 1):
            raise ValueError(f"`chunk_codes` and `first_chunk_codes` must be at least 1, got {chunk_codes} and "
                             f"{first_chunk_codes}.")
        self.codec = codec
        self.continuous = continuous  # frames are (d,) latents for `decode_continuous`, not codes
        self.chunk_codes = chunk_codes
        # A small first chunk brings the first sound early; larger later ones re-decode less context per code.
        self.first_chunk_codes = first_chunk_codes or chunk_codes
        self.context_codes = receptive_radius_codes(codec.config) if context_codes is None else int(context_codes)
        self.codes: list[int] = []
        self.emitted = 0  # codes whose audio has been returned

    def push(self, codes: Iterable, decode: bool = True) -> list[np.ndarray]:
        """Add codes (or latent frames); returns the chunks now complete (none with `decode=False`: a batching
        caller decodes many streams at once with `decode_together`)."""
        if self.continuous:
            self.codes.extend(torch.as_tensor(frame, dtype=torch.float32) for frame in codes)
        else:
            self.codes.extend(int(c) for c in codes)
        chunks = []
        while decode and self.ready():
            chunks.append(self._decode(self.next_stop()))
        return chunks

    def next_stop(self) -> int:
        """Where the next chunk ends (in codes)."""
        return self.emitted + (self.first_chunk_codes if self.emitted == 0 else self.chunk_codes)

    def ready(self) -> bool:
        """A whole chunk and its right context have arrived."""
        return len(self.codes) >= self.next_stop() + self.context_codes

    def flush(self) -> np.ndarray | None:
        return self._decode(len(self.codes)) if len(self.codes) > self.emitted else None

    def window(self, stop: int) -> tuple[int, int]:
        """The codes [start, end) decoded for the chunk that ends at `stop`: the chunk and its context."""
        return max(0, self.emitted - self.context_codes), min(len(self.codes), stop + self.context_codes)

    def frames(self, start: int, end: int) -> torch.Tensor:
        """(T,) codes, or (T, d) latents, of a window."""
        if self.continuous:
            return torch.stack(self.codes[start:end])
        return torch.tensor(self.codes[start:end])

    def take(self, wave: torch.Tensor, start: int, stop: int) -> np.ndarray:
        """The chunk's samples out of its decoded window; marks it emitted."""
        per_code = self.codec.config.samples_per_code
        chunk = wave[(self.emitted - start) * per_code : (stop - start) * per_code]
        self.emitted = stop
        return chunk.float().cpu().numpy()

    def _decode(self, stop: int) -> np.ndarray:
        start, end = self.window(stop)
        return self.take(decode_windows(self.codec, self.frames(start, end)[None], self.continuous)[0], start, stop)


def decode_windows(codec, frames: torch.Tensor, continuous: bool) -> torch.Tensor:
    """(B, T) codes or (B, T, d) latents -> (B, samples), without a graph."""
    device = next(codec.parameters()).device
    with torch.no_grad():
        if continuous:
            return codec.decode_continuous(frames.to(device))
        return codec.decode(frames.to(device))


def decode_together(decoders: list[IncrementalSpeechDecoder]) -> list[list[np.ndarray]]:
    """The ready chunks of many streams, decoded with one codec call per window shape instead of one per stream
    (a server's rows reach their chunk boundaries together). Returns each decoder's chunks, in order."""
    out: list[list[np.ndarray]] = [[] for _ in decoders]
    while True:
        ready = [i for i, d in enumerate(decoders) if d.ready()]
        if not ready:
            return out
        groups: dict[tuple, list[tuple[int, int, int, int]]] = {}
        for i in ready:
            d = decoders[i]
            stop = d.next_stop()
            start, end = d.window(stop)
            groups.setdefault((end - start, d.continuous, id(d.codec)), []).append((i, start, end, stop))
        for members in groups.values():
            first = decoders[members[0][0]]
            frames = torch.stack([decoders[i].frames(start, end) for i, start, end, _ in members])  # (n, T[, d])
            waves = decode_windows(first.codec, frames, first.continuous)
            for (i, start, _, stop), wave in zip(members, waves):
                out[i].append(decoders[i].take(wave, start, stop))


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
        snap_to_codebook: diffusion head: decode the latents snapped to the codec's FSQ grid (as
            `diffusion_config.snap_to_codebook`; `generate_stream` passes the model's setting).
        defer_audio: only collect codes in `put_step`; the owner decodes the audio of many streamers in one
            codec call with `decode_streams` (a server's batch).
        first_chunk_steps: steps of the first audio chunk (default `chunk_steps`): small for an early first
            sound, with larger `chunk_steps` after it to decode less overlapping context per second of speech.
    """

    def __init__(self, processor, codec=None, chunk_steps: int = 5, context_codes: int | None = None,
                 timeout: float | None = None, snap_to_codebook: bool = False, defer_audio: bool = False,
                 first_chunk_steps: int | None = None):
        if chunk_steps < 1 or (first_chunk_steps is not None and first_chunk_steps < 1):
            raise ValueError(f"`chunk_steps` and `first_chunk_steps` must be at least 1 (5 Hz steps per audio chunk), "
                             f"got {chunk_steps} and {first_chunk_steps}.")
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.codec = codec
        self.chunk_steps = chunk_steps
        self.first_chunk_steps = first_chunk_steps
        self.context_codes = context_codes
        self.timeout = timeout
        self.sampling_rate = None if codec is None else codec.config.sampling_rate
        self.snap_to_codebook = snap_to_codebook  # diffusion head: decode the latents snapped to the FSQ grid
        self.defer_audio = defer_audio
        self.queue: queue.Queue = queue.Queue()
        self._end = object()
        self._reset()

    def _reset(self) -> None:
        self.text_ids: list[int] = []
        self.text_emitted = ""
        self.text_ended = False
        self.speech_ended = False
        self.audio_done = False  # the last audio chunk has been queued
        self.audio_decoder = None

    def put_step(self, step: StreamStep) -> None:
        if step.text_ids.shape[0] != 1:
            raise ValueError(
                f"OmniDRCAStreamer streams one conversation at a time, got a batch of {step.text_ids.shape[0]}."
            )
        cfg = self.processor.stream_layout
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
                first = None if self.first_chunk_steps is None else k * self.first_chunk_steps
                self.audio_decoder = IncrementalSpeechDecoder(
                    self.codec, k * self.chunk_steps, self.context_codes, continuous=continuous, first_chunk_codes=first
                )
            group = step.speech_ids[0].tolist()
            if self.processor.speech_eos_token_id in group:
                self.speech_ended = True
            codes = self.processor.speech_codes(group)
            if continuous:  # the frames lead the group, before any [eos]
                frames = step.speech_latents[0, : len(codes)].float().cpu()
                if self.snap_to_codebook:
                    frames = self.codec.quantizer.codes_to_latents(torch.tensor(codes))
                codes = list(frames)
            chunks = self.audio_decoder.push(codes, decode=not self.defer_audio)
            if self.speech_ended and not self.defer_audio:
                tail = self.audio_decoder.flush()
                chunks += [tail] if tail is not None else []
                self.audio_done = True
        if text_piece:
            self.queue.put(StreamPiece(text_piece, chunks.pop(0) if chunks else None))
        for chunk in chunks:
            self.queue.put(StreamPiece("", chunk))

    def end(self) -> None:
        text = self.tokenizer.decode(self.text_ids, skip_special_tokens=True)
        tail = None
        if self.audio_decoder is not None and not self.audio_done:  # deferred chunks not yet decoded, and the tail
            pieces = self.audio_decoder.push([])
            last = self.audio_decoder.flush()
            pieces += [last] if last is not None else []
            tail = np.concatenate(pieces) if pieces else None
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


def decode_streams(streamers: list[OmniDRCAStreamer]) -> None:
    """Decode the ready audio of many `defer_audio` streamers together and queue it; a streamer whose speech
    has ended also gets its tail. Their pieces then come out of `drain()` as usual."""
    active = [s for s in streamers if s.audio_decoder is not None and not s.audio_done]
    for streamer, chunks in zip(active, decode_together([s.audio_decoder for s in active])):
        if streamer.speech_ended:
            tail = streamer.audio_decoder.flush()
            chunks += [tail] if tail is not None else []
            streamer.audio_done = True
        for chunk in chunks:
            streamer.queue.put(StreamPiece("", chunk))


__all__ = ["IncrementalSpeechDecoder", "OmniDRCAStreamer", "StreamPiece", "decode_streams", "decode_together",
           "receptive_radius_codes"]
