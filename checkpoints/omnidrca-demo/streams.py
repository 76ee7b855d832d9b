"""The parallel text/speech stream layout of an assistant turn, and the SRH's teacher-forcing inputs.

One LLM position (a 5 Hz step for k=5) carries one text token and one *group* of k speech tokens. The
functions here are the single definition of that layout: the processor's training builder, the model's
loss and (later) generation all go through them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

IGNORE_INDEX = -100
TEXT_ALIGNMENTS = ("leading", "spread")  # where an answer's text tokens sit beside its speech (see `build_assistant_streams`)


@dataclass
class AssistantStreams:
    """One assistant turn laid out as parallel streams; S is the number of LLM steps of the turn."""

    input_ids: torch.LongTensor  # (S,) text stream, one token per LLM step
    speech_ids: torch.LongTensor  # (S, k) speech stream, one group of k 25 Hz tokens per LLM step
    labels: torch.LongTensor  # (S,) text targets, unshifted like HF causal-LM labels; -100 = no loss
    speech_labels: torch.LongTensor  # (S, k) speech targets, unshifted; -100 = no loss
    speech_latents: torch.FloatTensor | None = None  # (S, k, d) continuous latents of the frames (diffusion head), 0 elsewhere


@dataclass(frozen=True)
class StreamLayout:
    """The parallel-stream layout in one typed object: k, the delay, and every id the layout forces or pads with.

    Owned by the config (`OmniDRCAConfig.stream_layout`); the processor holds one built from its own saved values
    (`processor.stream_layout`), and `build_assistant_streams`, training and the generation session read it. Ids
    are None until the tokenizer's stream tokens are known (the processor fills them into the config).
    """

    group_size: int  # k: 25 Hz speech tokens per LLM step
    speech_delay: int  # d: groups the speech stream lags the text stream
    speech_vocab_size: int  # codec codes; the speech specials follow them
    speech_bos_token_id: int  # the delay's groups
    speech_eos_token_id: int  # ends the speech stream (learned)
    speech_pad_token_id: int  # after [eos], and every group of a text-only answer (embeds to zero)
    assistant_bos_token_id: int | None = None  # `<abos>`: forced at the first answer row
    assistant_eos_token_id: int | None = None  # `<aeos>`: ends the text stream (learned)
    text_pad_token_id: int | None = None  # the text stream after `<aeos>` while speech still runs
    audio_token_id: int | None = None  # `<|AUDIO|>`: a slot of user audio in the prompt
    text_alignment: str = "leading"  # or "spread": a spoken answer's tokens beside the speech that says them
    speech_read: str = "always"  # or "after_text": the backbone reads a speech group only where the text pads

    @classmethod
    def from_config(cls, config: Any) -> StreamLayout:
        """The layout of any object with the config's field names (a config, a processor's saved values)."""
        if isinstance(config, StreamLayout):
            return config
        layout = getattr(config, "stream_layout", None)
        return layout if isinstance(layout, StreamLayout) else cls.from_fields(config)

    @classmethod
    def from_fields(cls, config: Any) -> StreamLayout:
        """Read the layout's fields by name (missing ones are None; a missing alignment is "leading", a missing
        speech read "always")."""
        values = {f.name: getattr(config, f.name, None) for f in fields(cls)}
        return cls(**{**values, "text_alignment": values["text_alignment"] or "leading",
                      "speech_read": values["speech_read"] or "always"})

    def __post_init__(self):
        check_text_alignment(self.text_alignment)
        check_speech_read(self.speech_read)

    @property
    def text_never_sampled(self) -> list[int]:
        """Text ids that are never a next-token target: the forced `<abos>`, padding and audio slots."""
        return [t for t in (self.assistant_bos_token_id, self.text_pad_token_id, self.audio_token_id) if t is not None]

    @property
    def spreads_text(self) -> bool:
        """Whether a spoken answer's text tokens are spread over its speech, `text_pad` between them."""
        return self.text_alignment == "spread"

    def text_banned(self, speech_mode: bool) -> list[int]:
        """Text ids generation never samples: `text_never_sampled`, less `text_pad` where the layout spreads a
        spoken answer's text (there the pads between words are learned targets)."""
        if speech_mode and self.spreads_text:
            return [t for t in self.text_never_sampled if t != self.text_pad_token_id]
        return self.text_never_sampled

    @property
    def speech_never_sampled(self) -> list[int]:
        """Speech ids that are never sampled: the delay's `[bos]` and `[pad]`."""
        return [self.speech_bos_token_id, self.speech_pad_token_id]

    def mismatches(self, other: StreamLayout) -> dict[str, tuple]:
        """{field: (self's value, other's value)} for every field on which the two layouts disagree."""
        return {f.name: (getattr(self, f.name), getattr(other, f.name)) for f in fields(self)
                if getattr(self, f.name) != getattr(other, f.name)}


def check_text_alignment(value: Any) -> None:
    """Raise a `ValueError` unless `value` is one of `TEXT_ALIGNMENTS`."""
    if value not in TEXT_ALIGNMENTS:
        raise ValueError(
            f"`text_alignment` must be one of {TEXT_ALIGNMENTS}, got {value!r}. Use 'leading' (an answer's text "
            "first, then padding while its speech runs) or 'spread' (its tokens spread over its speech)."
        )


def _require(config: Any, name: str) -> int:
    value = getattr(config, name, None)
    if value is None:
        raise ValueError(
            f"`config.{name}` is not set, but the stream layout needs it. Build the config with the special "
            "token ids of your tokenizer (the processor does this for you)."
        )
    return int(value)


def build_assistant_streams(
    text_ids: Sequence[int],
    speech_codes: Sequence[int] | None,
    config: Any,
    speech_latents: Any = None,
    text_starts: Sequence[float] | None = None,
) -> AssistantStreams:
    r"""Lay out one assistant turn as parallel text and speech streams.

    The layout (k = `config.group_size` = 5, d = `config.speech_delay` = 2; `·` = padding):

    ```
    step (5 Hz)   0        1        2          3          ...  n          n+1
    text          <abos>   t1       t2         t3         ...  <aeos>     ·
    speech        [bos]    [bos]    s0 … s4    s5 … s9    ...  … s_end    [eos] · · · ·
    ```

    - text: `<abos>`, the m answer tokens, `<aeos>`; then `text_pad_token_id` while speech still runs.
      With `text_alignment="spread"` a spoken answer's tokens are spread over its speech instead: token j
      at step 1 + floor(f_j * G), G = speech groups, f_j = where it starts being said (`text_starts`; evenly
      j / m without), so each word leads its sound by d - 1 steps, as moshi's text stream is aligned to its
      audio. `text_pad` fills the steps between them and is a learned target there, so late speech steps still
      see the word being said. A token never moves before the step after the previous one. Text-only answers
      stay leading.
    - speech: d groups of `[bos]` (the delay), then the codes followed by one `[eos]`, padded with
      `[pad]` up to a multiple of k; then whole `[pad]` groups while text still runs. With no speech
      (text-only answers) every group is `[pad]`, whose embedding is zero.
    - labels follow the input rows, unshifted (the model predicts row t+1 from the hidden state of
      row t). Forced tokens carry no loss: `<abos>`, the `[bos]` groups, and all padding. `<aeos>` and
      `[eos]` are learned, so generation can stop each stream by itself.

    Args:
        text_ids: the answer's text token ids, without `<abos>`/`<aeos>`.
        speech_codes: the answer's 25 Hz codec codes, or `None` for a text-only answer.
        config: a [`StreamLayout`], or an `OmniDRCAConfig` / processor (any object with its field names).
        speech_latents: (n_codes, d) continuous codec latents of the same frames (diffusion head, see
            `OmniDRCASpeechCodec.encode_continuous`); placed where the codes are, zero elsewhere.
        text_starts: (m,) for spread text, the fraction (0..1) of the speech at which each token starts being
            said; the processor gives its word's character offset over the answer's length, so the tokens of
            one word stay together and pads fall between words.

    Returns:
        [`AssistantStreams`] with S = max(m + 2, d + ceil((n_codes + 1) / k)) steps (m + 2 when text-only);
        spread text with d < 2 may take one step more (`<aeos>` follows the last word, near the last group).
    """
    config = StreamLayout.from_config(config)
    k = _require(config, "group_size")
    delay = _require(config, "speech_delay")
    for name in ("assistant_bos_token_id", "assistant_eos_token_id"):
        _require(config, name)
    text_pad = _require(config, "text_pad_token_id")
    s_bos, s_eos = _require(config, "speech_bos_token_id"), _require(config, "speech_eos_token_id")
    s_pad = _require(config, "speech_pad_token_id")

    n_groups = 0
    if speech_codes is None:
        speech: list[int] = []
        speech_labels: list[int] = []
    else:
        codes = [int(c) for c in speech_codes]
        bad = [c for c in codes if not 0 <= c < config.speech_vocab_size]
        if bad:
            raise ValueError(
                f"speech codes must lie in 0..{config.speech_vocab_size - 1} (the codec's codebook), got {bad[:5]}; "
                "encode the answer audio with the model's own speech codec."
            )
        body = codes + [s_eos]
        n_groups = math.ceil(len(body) / k)
        fill = n_groups * k - len(body)
        speech = [s_bos] * (delay * k) + body + [s_pad] * fill
        speech_labels = [IGNORE_INDEX] * (delay * k) + body + [IGNORE_INDEX] * fill

    latents = None
    if speech_latents is not None:
        if speech_codes is None:
            raise ValueError("`speech_latents` belong to speech frames: pass the answer's `speech_codes` too.")
        frames = torch.as_tensor(speech_latents, dtype=torch.float32)
        if frames.dim() != 2 or frames.shape[0] != len(codes):
            raise ValueError(
                f"`speech_latents` must have shape (n_codes={len(codes)}, latent_dim), one latent per code, got "
                f"{tuple(frames.shape)}. Encode codes and latents from the same audio with the model's codec."
            )
        latents = frames
    text, text_labels = _text_stream(list(map(int, text_ids)), n_groups, config, text_starts)
    steps = max(len(text), len(speech) // k)
    text += [text_pad] * (steps - len(text))
    text_labels += [IGNORE_INDEX] * (steps - len(text_labels))
    speech += [s_pad] * (steps * k - len(speech))
    speech_labels += [IGNORE_INDEX] * (steps * k - len(speech_labels))
    if latents is not None:
        start = delay * k
        placed = torch.zeros(steps * k, latents.shape[1])
        placed[start : start + latents.shape[0]] = latents
        latents = placed.view(steps, k, -1)  # (S, k, d)
    return AssistantStreams(
        input_ids=torch.tensor(text, dtype=torch.long),
        speech_ids=torch.tensor(speech, dtype=torch.long).view(steps, k),  # (S, k)
        labels=torch.tensor(text_labels, dtype=torch.long),
        speech_labels=torch.tensor(speech_labels, dtype=torch.long).view(steps, k),  # (S, k)
        speech_latents=latents,
    )


def _text_stream(
    text_ids: list[int], speech_groups: int, layout: StreamLayout, starts: Sequence[float] | None = None
) -> tuple[list[int], list[int]]:
    """The text stream up to `<aeos>` and its labels: tokens back to back, or spread over `speech_groups`."""
    abos, pad = layout.assistant_bos_token_id, layout.text_pad_token_id
    tokens = [*text_ids, layout.assistant_eos_token_id]
    if not (layout.spreads_text and speech_groups and text_ids):
        return [abos, *tokens], [IGNORE_INDEX, *tokens]
    m = len(text_ids)
    if starts is None:
        starts = [j / m for j in range(m)]
    elif len(starts) != m:
        raise ValueError(f"`text_starts` needs one fraction per answer token ({m}), got {len(starts)}.")
    text, labels = [abos], [IGNORE_INDEX]
    for j, token in enumerate(tokens):
        row = 1 + int(float(starts[j]) * speech_groups) if j < m else 0  # `<aeos>` right after the last word
        pads = max(0, row - len(text))  # rows that would collide move on: never fewer rows than leading
        text += [pad] * pads + [token]
        labels += [pad] * pads + [token]
    return text, labels


def speech_special_ids(
    speech_vocab_size: int, bos: int | None = None, eos: int | None = None, pad: int | None = None
) -> tuple[int, int, int]:
    """The speech stream's (bos, eos, pad) ids; those not given follow the codec's codes in that order."""
    return (
        speech_vocab_size if bos is None else bos,
        speech_vocab_size + 1 if eos is None else eos,
        speech_vocab_size + 2 if pad is None else pad,
    )


def num_audio_groups(num_mel_frames: int, group_size: int) -> int:
    """<|AUDIO|> slots of a user clip with `num_mel_frames` real 100 Hz frames: the encoder's stride-2
    conv gives ceil(F / 2) frames at 50 Hz, pooling pairs gives T25 = that // 2, grouping gives
    ceil(T25 / k)."""
    t25 = ((num_mel_frames - 1) // 2 + 1) // 2
    return -(-t25 // group_size)


def srh_previous_ids(speech_ids: torch.LongTensor) -> torch.LongTensor:
    """Teacher-forcing inputs of the Speech Refined Head for the groups at rows 1..L-1.

    The SRH predicts group t+1 from the LLM state of row t, one 25 Hz token at a time; the token before
    the first one of group t+1 is the last token of group t. So, for target group t+1:
    `previous = [s_{t,k-1}, s_{t+1,0}, …, s_{t+1,k-2}]`.

    Args:
        speech_ids: (B, L, k) speech stream.
    Returns:
        (B, L-1, k) previous-token ids aligned with `speech_ids[:, 1:]`.
    """
    return torch.cat([speech_ids[:, :-1, -1:], speech_ids[:, 1:, :-1]], dim=-1)  # (B, L-1, k)


SPEECH_READS = ("always", "after_text")


def check_speech_read(value: Any) -> None:
    if value not in SPEECH_READS:
        raise ValueError(f"`speech_read` must be one of {SPEECH_READS}, got {value!r}. 'always' adds every speech "
                         "group to its position's input; 'after_text' only where the text input is `text_pad`.")


def gate_speech_ids(config: Any, text_ids: torch.LongTensor | None, speech_ids: torch.LongTensor) -> torch.LongTensor:
    """The speech groups the backbone reads: with `config.speech_read == "after_text"`, each group whose text input
    (same position) is not `text_pad` becomes a `[pad]` group, which embeds to zero; so a leading answer's text is
    chosen before any speech is read. `text_ids` (B, L) and `speech_ids` (B, L, k); the SRH keeps the clean codes.
    With `text_ids=None` (a caller that passes `inputs_embeds`) the caller gates, as the generation session does."""
    if getattr(config, "speech_read", "always") == "always" or text_ids is None:
        return speech_ids
    reads = (text_ids == config.text_pad_token_id).unsqueeze(-1)  # (B, L, 1)
    return torch.where(reads, speech_ids, torch.full_like(speech_ids, config.speech_pad_token_id))


__all__ = ["IGNORE_INDEX", "SPEECH_READS", "TEXT_ALIGNMENTS", "AssistantStreams", "StreamLayout", "build_assistant_streams",
           "check_speech_read", "gate_speech_ids", "num_audio_groups", "speech_special_ids", "srh_previous_ids"]
