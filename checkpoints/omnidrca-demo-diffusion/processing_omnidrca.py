"""OmniDRCAProcessor: feature extractor + tokenizer + chat template, the training-side stream builder,
and the decode helpers that turn generated ids into text and waveforms."""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin
from transformers.processing_utils import _UNMARKED, ProcessingKwargs, Unpack

from .audio_utils import resample
from .feature_extraction_omnidrca import OmniDRCAFeatureExtractor
from .streams import IGNORE_INDEX, StreamLayout, build_assistant_streams, num_audio_groups, speech_special_ids
from .tokenization import STREAM_SPECIAL_TOKENS, stream_token_ids

DEFAULT_SYSTEM_PROMPT = "You are a helpful voice assistant. Answer briefly."
# The system prompt tells the model which task a turn is (DESIGN.md §5): the one definition, read by the corpus
# builder, training, evaluation and the Space.
TASKS = ("asr", "s2t", "s2s", "t2s", "repeat")
SYSTEM_PROMPTS = {
    "asr": "Transcribe the user's speech.",
    "s2t": "You are a helpful voice assistant. Answer briefly in text.",
    "s2s": DEFAULT_SYSTEM_PROMPT,
    "t2s": "Read the user's text aloud.",
    "repeat": "Repeat what the user says.",
}

# ChatML with audio items. A clip renders as <|audio_bos|><|AUDIO|><|audio_eos|>; the processor then
# expands <|AUDIO|> to the clip's ceil(T_25Hz / k) slots. Earlier assistant turns are text only; the
# answer being generated or trained starts after "<|im_start|>assistant\n" with the <|abos|> stream.
# `{% generation %}` marks what an assistant turn teaches, for `return_assistant_tokens_mask=True` (TRL's
# assistant-only loss): its text and <|aeos|>, as in `build_assistant_streams`, where <|abos|> is forced (no
# loss) and <|aeos|> is learned. The marker renders nothing, so the prompt text is the same with or without it.
DEFAULT_CHAT_TEMPLATE = (
    "{% macro render_content(content) %}"
    "{% if content is string %}{{ content }}"
    "{% else %}{% for item in content %}"
    "{% if item['type'] == 'audio' %}<|audio_bos|><|AUDIO|><|audio_eos|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endmacro %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n{{ default_system_prompt }}<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}"
    "<|abos|>{% generation %}{{ render_content(message['content']) }}<|aeos|>{% endgeneration %}"
    "{% else %}{{ render_content(message['content']) }}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Audio kwargs the feature extractor understands (it rejects others). `padding` only in the values it accepts:
# transformers copies a flat `padding` (meant for the text, e.g. False) to every modality that has one.
_FEATURE_KWARGS = ("sampling_rate", "device")
_FEATURE_PADDING = (True, "longest", "max_length")


class OmniDRCAProcessor(ProcessorMixin):
    r"""Turns conversations with speech into model inputs, and model outputs into text and audio.

    Args:
        feature_extractor ([`OmniDRCAFeatureExtractor`]): log-mel features of user speech.
        tokenizer: a fast tokenizer holding the stream special tokens (see `modeling_omnidrca.tokenization`).
        chat_template (`str`, *optional*): Jinja template; defaults to ChatML with audio items.
        group_size (`int`, defaults to 5): k, the model's `group_size`.
        speech_delay (`int`, defaults to 2): the model's `speech_delay`, in groups.
        speech_vocab_size (`int`, defaults to 6561): codec codes; speech bos/eos/pad follow unless given.
        speech_bos_token_id / speech_eos_token_id / speech_pad_token_id (`int`, *optional*): as in the config.
        default_system_prompt (`str`): the system turn the template adds when a conversation has none.
        text_alignment (`str`, defaults to `"leading"`): the model's `text_alignment` ("leading" or "spread").
        speech_read (`str`, defaults to `"always"`): the model's `speech_read` ("always" or "after_text").
    """

    # Call-time defaults, the lowest-priority layer of `ProcessorMixin._merge_kwargs`: the tokenizer's own init
    # kwargs (e.g. a tokenizer saved with `padding="max_length"`) and call-time kwargs override them. Prompts are
    # padded to the longest on the tokenizer's side (left: generation batches end on the assistant header), and
    # get no tokenizer-added special tokens (the chat template writes them all). No token_type_ids: the model
    # takes none.
    text_kwargs = {"padding": True, "add_special_tokens": False, "return_token_type_ids": False}

    def __init__(
        self,
        feature_extractor: OmniDRCAFeatureExtractor | None = None,
        tokenizer=None,
        chat_template: str | None = None,
        group_size: int = 5,
        speech_delay: int = 2,
        speech_vocab_size: int = 6561,
        speech_bos_token_id: int | None = None,
        speech_eos_token_id: int | None = None,
        speech_pad_token_id: int | None = None,
        default_system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        text_alignment: str = "leading",
        speech_read: str = "always",
    ):
        self.group_size = group_size
        self.speech_delay = speech_delay
        self.speech_vocab_size = speech_vocab_size
        self.speech_bos_token_id, self.speech_eos_token_id, self.speech_pad_token_id = speech_special_ids(
            speech_vocab_size, speech_bos_token_id, speech_eos_token_id, speech_pad_token_id
        )
        self.default_system_prompt = default_system_prompt
        self.text_alignment = text_alignment
        self.speech_read = speech_read
        for name, token in STREAM_SPECIAL_TOKENS.items():
            setattr(self, name, token)
        super().__init__(feature_extractor, tokenizer, chat_template=chat_template or DEFAULT_CHAT_TEMPLATE)
        if self._auto_class is not None:
            # The `auto_map` entry `save_pretrained` writes (and sets on the processor) for trust_remote_code,
            # set up front: saving must not change `to_dict()`, so a saved and reloaded processor equals this one.
            self.auto_map = {self._auto_class: f"{type(self).__module__.rsplit('.', 1)[-1]}.{type(self).__name__}"}
        token_ids = stream_token_ids(tokenizer)  # raises a clear error when a stream token is missing
        # Generation appends to the end of every prompt row, so a batch is padded on the left. A pretrained
        # backbone's tokenizer may say right (SmolLM2's does, and the SmolLM2 demo shipped it so: batched
        # questions were refused as right-padded); a call's own `padding_side` still wins.
        tokenizer.padding_side = "left"
        self.audio_token_id = token_ids["audio_token_id"]
        # The layout this processor builds (its own saved values + its tokenizer's stream tokens); a model's
        # config must have the same (`check_model_compatibility`).
        self.stream_layout = StreamLayout(
            group_size=group_size,
            speech_delay=speech_delay,
            speech_vocab_size=speech_vocab_size,
            speech_bos_token_id=self.speech_bos_token_id,
            speech_eos_token_id=self.speech_eos_token_id,
            speech_pad_token_id=self.speech_pad_token_id,
            text_alignment=text_alignment,
            speech_read=speech_read,
            **token_ids,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        # ProcessorMixin hands every keyword (`speech_read="after_text"`) to the tokenizer too, which saves it in
        # tokenizer_config.json and reads it back from there; these settings belong in processor_config.json only.
        for name in inspect.signature(cls.__init__).parameters:
            if name not in ("self", "feature_extractor", "tokenizer", "chat_template"):
                processor.tokenizer.init_kwargs.pop(name, None)
        return processor

    @property
    def stream_config(self) -> StreamLayout:
        """Former name of `stream_layout`."""
        return self.stream_layout

    # --- compatibility with a model ---------------------------------------------------------------

    def check_model_compatibility(self, config: Any) -> None:
        """Raise a `ValueError` listing every stream setting on which this processor and the model's
        config disagree (group size, delay, speech ids, special text ids)."""
        wrong = self.stream_layout.mismatches(StreamLayout.from_config(config))
        if wrong:
            detail = ", ".join(f"{f}: processor {p} vs model {m}" for f, (p, m) in wrong.items())
            raise ValueError(f"Processor and model disagree on the stream layout ({detail}). Load both from the same "
                             "checkpoint folder, or rebuild the processor from the model config.")

    # --- prompts ----------------------------------------------------------------------------------

    def apply_chat_template(self, conversation, chat_template: str | None = None, **kwargs):
        """transformers' `apply_chat_template`, with the default system prompt. With `tokenize=True,
        return_dict=True, return_assistant_tokens_mask=True` it also returns `assistant_masks`, 1 on the tokens an
        assistant turn teaches (its text and `<|aeos|>`), for TRL's assistant-only loss."""
        # Only a template that reads it gets the default system prompt: any other keyword would be taken for a
        # processor kwarg and forwarded to `__call__`.
        if "default_system_prompt" in str(self._resolve_chat_template(chat_template)):
            kwargs.setdefault("default_system_prompt", self.default_system_prompt)
        return super().apply_chat_template(conversation, chat_template=chat_template, **kwargs)

    def _multimodal_inputs_from_conversations(self, conversations, audio_loading_params, load_audio_from_video=False):
        """Collect the audio items of the conversations in order (arrays or local files), resampled to the
        feature extractor's rate by our own loader, not transformers' URL/ffmpeg one."""
        # apply_chat_template then tells `__call__` the clips are at `sampling_rate` (the extractor's unless the
        # caller chose another), so they are brought to that rate.
        rate = audio_loading_params.get("sampling_rate") or self.feature_extractor.sampling_rate
        audios = []
        for conversation in conversations:
            for message in conversation:
                content = message.get("content")
                if isinstance(content, str) or not content:
                    continue
                for item in content:
                    if item.get("type") == "audio":
                        clip = self._load_audio_item(item)
                        if rate != self.feature_extractor.sampling_rate:
                            clip = resample(clip, self.feature_extractor.sampling_rate, rate)
                        audios.append(clip)
        return [[] for _ in conversations], [[] for _ in conversations], audios, {}

    def _load_audio_item(self, item: dict) -> np.ndarray:
        keys = [k for k in ("audio", "path", "url") if item.get(k) is not None]
        if not keys:
            raise ValueError(
                f"An audio item needs its audio: {{'type': 'audio', 'audio': array | file path}} or "
                f"{{'type': 'audio', 'path': file}}; got keys {sorted(item)}. An empty audio item can't be heard."
            )
        source = item[keys[0]]
        if isinstance(source, str) and source.startswith(("http://", "https://")):
            raise ValueError(f"Audio URLs are not fetched ({source}); download the file and pass its local path.")
        rate = item.get("sampling_rate")
        return self.feature_extractor.load(source, sampling_rate=rate)

    def __call__(
        self, text: str | Sequence[str] | None = None, audio=None, **kwargs: Unpack[ProcessingKwargs]
    ) -> BatchFeature:
        """Tokenize prompts and extract features; each `<|AUDIO|>` becomes its clip's number of slots.

        Args:
            text: one prompt or a batch; holds one `<|AUDIO|>` per audio clip, in order.
            audio: the clips (arrays, tensors, or file paths), flattened across the batch in order.
            **kwargs: transformers' processor kwargs, flat or per modality (`text_kwargs`, `audio_kwargs`,
                `common_kwargs`), merged as `ProcessorMixin._merge_kwargs` does: e.g. `return_tensors`, the
                tokenizer's `padding` / `truncation` / `max_length` / `padding_side` / `return_offsets_mapping`,
                the extractor's `sampling_rate` (rate of raw-array audio; files carry their own) and `device`.
                Prompts are padded to the longest unless the tokenizer or the call says otherwise.
        Returns:
            `input_ids`, `attention_mask` and, with audio, `input_features` and `feature_attention_mask` (plus
            `offset_mapping` / `text_replacement_offsets` when asked for, as `apply_chat_template` does for
            `return_assistant_tokens_mask=True`).
        """
        if text is None:
            raise ValueError("OmniDRCAProcessor needs `text` (use apply_chat_template to build it from a conversation).")
        texts = [text] if isinstance(text, str) else list(text)
        clips = [] if audio is None else (list(audio) if isinstance(audio, (list, tuple)) else [audio])
        # Placeholders that `sanitize_control_tokens` marked as user text are not slots (as in transformers).
        slot = re.compile(_UNMARKED + re.escape(self.audio_token))
        n_slots = sum(len(slot.findall(t)) for t in texts)
        if n_slots != len(clips):
            raise ValueError(
                f"The total number of {self.audio_token} tokens in the prompts should be the same as the number of "
                f"audio clips passed: the text holds {n_slots} {self.audio_token} placeholder(s) but {len(clips)} "
                "audio clip(s) were given. Give exactly one clip per audio item of the conversation, in order."
            )
        merged = self._merge_kwargs(
            self.valid_processor_kwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs
        )
        text_kwargs, audio_kwargs = merged["text_kwargs"], merged["audio_kwargs"]
        return_tensors = text_kwargs.get("return_tensors")
        # Processor-level flags; transformers still mirrors them into text_kwargs, which the tokenizer must not get.
        return_offsets = text_kwargs.pop("return_text_replacement_offsets", None) or merged.get(
            "return_text_replacement_offsets"
        )
        return_mm_ids = text_kwargs.pop("return_mm_token_type_ids", None) or merged.get("return_mm_token_type_ids")

        data: dict[str, Any] = {}
        replacements: list[str] = []
        if clips:
            feature_kwargs = {k: audio_kwargs[k] for k in _FEATURE_KWARGS if audio_kwargs.get(k) is not None}
            if audio_kwargs.get("padding") in _FEATURE_PADDING:
                feature_kwargs["padding"] = audio_kwargs["padding"]
            # Always tensors and the frame mask: the slot counts are read from it.
            feats = self.feature_extractor(clips, return_tensors="pt", return_attention_mask=True, **feature_kwargs)
            data["input_features"] = feats["input_features"]
            data["feature_attention_mask"] = feats["attention_mask"]
            replacements = [self.replace_audio_token(feats, i) for i in range(len(clips))]
            short = [i for i, r in enumerate(replacements) if not r]
            if short:
                raise ValueError(
                    f"Audio clip(s) {short} are too short: under 30 ms they give no 25 Hz encoder frame. "
                    "Record or pass a longer clip."
                )
        texts, replacement_offsets = self.get_text_with_replacements(texts, audio_replacements=replacements)
        encoded = self.tokenizer(texts, **text_kwargs)
        self._check_special_mm_tokens(texts, encoded, modalities=["audio"])  # truncation must not cut a clip's slots
        data.update(encoded)
        if return_offsets:
            data["text_replacement_offsets"] = replacement_offsets
        if return_mm_ids:
            data["mm_token_type_ids"] = self.create_mm_token_type_ids(encoded["input_ids"])
        return BatchFeature(data, tensor_type=return_tensors, skip_tensor_conversion=self.skip_tensor_conversion)

    def replace_audio_token(self, audio_inputs: dict, audio_idx: int, **kwargs) -> str:
        """The slots of clip `audio_idx`: one `<|AUDIO|>` per grouped 5 Hz audio embedding (empty when the clip
        is too short to give one)."""
        frames = int(audio_inputs["attention_mask"][audio_idx].sum())
        return self.audio_token * num_audio_groups(frames, self.group_size)

    def _expand_audio_slots(self, texts: list[str], frames_per_clip: list[int]) -> list[str]:
        groups = [num_audio_groups(int(f), self.group_size) for f in frames_per_clip]
        short = [i for i, g in enumerate(groups) if g == 0]
        if short:
            raise ValueError(
                f"Audio clip(s) {short} are too short: under 30 ms they give no 25 Hz encoder frame. "
                "Record or pass a longer clip."
            )
        it = iter(groups)
        return ["".join(part if i == 0 else self.audio_token * next(it) + part
                        for i, part in enumerate(t.split(self.audio_token))) for t in texts]

    # --- training ---------------------------------------------------------------------------------

    def build_training_batch(self, examples: Sequence[dict], return_tensors: str = "pt") -> BatchFeature:
        """Turn examples of any task into one right-padded training batch of parallel streams.

        Each example is a dict:
            `messages`: the prompt conversation (system/user turns; audio items as in `apply_chat_template`;
                earlier assistant turns as text);
            `answer_text`: the assistant's text stream (the spoken text in T2S, the transcript in ASR);
            `answer_codes`: the answer's 25 Hz codec codes, or `None` for a text-only answer (S2T, ASR);
            `answer_latents` (optional, diffusion head): (n_codes, d) continuous latents of the same frames;
            `transcripts` (optional): one transcript per audio item of `messages`, for the contrastive loss.
        So S2T, S2S, T2S and ASR differ only in which fields carry audio, and can share a batch.

        Returns:
            `input_ids`, `attention_mask`, `labels` (B, L); `speech_ids`, `speech_labels` (B, L, k);
            `speech_latents` (B, L, k, d) when an example has `answer_latents`; and, when
            the batch has audio, `input_features`, `feature_attention_mask` and — when every clip has one —
            `transcript_ids`, `transcript_attention_mask`.
        """
        if not examples:
            raise ValueError("build_training_batch got no examples; a batch needs at least one.")
        k, cfg = self.group_size, self.stream_layout
        rows, clips, transcripts = [], [], []
        for n, example in enumerate(examples):
            missing = {"messages", "answer_text"} - set(example)
            if missing:
                raise ValueError(f"Example {n} lacks {sorted(missing)}; each example needs 'messages' and 'answer_text'.")
            prompt = self.apply_chat_template(example["messages"], add_generation_prompt=True, tokenize=False)
            audio = self._multimodal_inputs_from_conversations([example["messages"]], {})[2]
            given = example.get("transcripts")
            if given is not None and len(given) != len(audio):
                raise ValueError(f"Example {n} has {len(audio)} audio item(s) but {len(given)} transcript(s).")
            transcripts.extend(given if given is not None else [None] * len(audio))
            if audio:  # loaded clips are at the extractor's rate: frames = samples // hop
                frames = [len(clip) // self.feature_extractor.hop_length for clip in audio]
                prompt = self._expand_audio_slots([prompt], frames)[0]
            clips.extend(audio)
            prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            answer_ids, starts = self._answer_tokens(example["answer_text"])
            turn = build_assistant_streams(answer_ids, example.get("answer_codes"), cfg, example.get("answer_latents"),
                                           text_starts=starts)
            p = len(prompt_ids)
            rows.append(dict(
                input_ids=torch.cat([torch.tensor(prompt_ids, dtype=torch.long), turn.input_ids]),
                labels=torch.cat([torch.full((p,), IGNORE_INDEX), turn.labels]),
                speech_ids=torch.cat([torch.full((p, k), cfg.speech_pad_token_id), turn.speech_ids]),
                speech_labels=torch.cat([torch.full((p, k), IGNORE_INDEX), turn.speech_labels]),
            ))
            if turn.speech_latents is not None:
                rows[-1]["speech_latents"] = torch.cat([torch.zeros(p, k, turn.speech_latents.shape[-1]), turn.speech_latents])

        length = max(r["input_ids"].shape[0] for r in rows)
        pad_values = dict(input_ids=self.tokenizer.pad_token_id, labels=IGNORE_INDEX,
                          speech_ids=cfg.speech_pad_token_id, speech_labels=IGNORE_INDEX)

        def right_pad(x: torch.Tensor, value: int) -> torch.Tensor:
            return torch.cat([x, torch.full((length - x.shape[0], *x.shape[1:]), value, dtype=x.dtype)])

        data: dict[str, Any] = {key: torch.stack([right_pad(r[key], v) for r in rows]) for key, v in pad_values.items()}
        with_latents = [r["speech_latents"] for r in rows if "speech_latents" in r]
        if with_latents:  # continuous speech stream (diffusion head): zeros wherever there is no frame
            d = with_latents[0].shape[-1]
            data["speech_latents"] = torch.stack([
                right_pad(r.get("speech_latents", torch.zeros(r["input_ids"].shape[0], k, d)), 0) for r in rows
            ])
        data["attention_mask"] = torch.stack(
            [right_pad(torch.ones(r["input_ids"].shape[0], dtype=torch.long), 0) for r in rows]
        )
        if clips:
            feats = self.feature_extractor(clips, return_tensors="pt")
            data["input_features"], data["feature_attention_mask"] = feats["input_features"], feats["attention_mask"]
            if all(t is not None for t in transcripts):
                enc = self.tokenizer(transcripts, padding=True, add_special_tokens=False, return_tensors="pt")
                data["transcript_ids"], data["transcript_attention_mask"] = enc["input_ids"], enc["attention_mask"]
        return BatchFeature(data, tensor_type=return_tensors)

    # --- decoding ---------------------------------------------------------------------------------

    def speech_codes(self, speech_ids: torch.Tensor | Sequence[int]) -> list[int]:
        """The codec codes of one generated speech stream: special tokens dropped, cut at the first eos."""
        ids = torch.as_tensor(speech_ids).flatten().tolist()
        if self.speech_eos_token_id in ids:
            ids = ids[: ids.index(self.speech_eos_token_id)]
        return [i for i in ids if 0 <= i < self.speech_vocab_size]

    def decode_speech(self, speech_ids: torch.Tensor, codec) -> list[np.ndarray]:
        """(B, T) or (B, L, k) generated speech ids -> one float32 waveform per row, at
        `codec.config.sampling_rate`, decoded by the model's codec (`model.speech_codec`)."""
        speech_ids = torch.as_tensor(speech_ids)
        rows = speech_ids.reshape(speech_ids.shape[0], -1) if speech_ids.dim() > 1 else speech_ids[None]  # (B, T)
        return self._decode_rows(rows, lambda row, codes, device: codec.decode(torch.tensor([codes], device=device)), codec)

    def decode_speech_latents(self, speech_ids: torch.Tensor, speech_latents: torch.Tensor, codec) -> list[np.ndarray]:
        """Diffusion head: (B, T) generated speech ids and (B, T, d) codec latents -> one float32 waveform per
        row, decoded from the latents of the frames before the first `[eos]` (`codec.decode_continuous`)."""
        speech_ids, speech_latents = torch.as_tensor(speech_ids), torch.as_tensor(speech_latents)
        rows = speech_ids.reshape(speech_ids.shape[0], -1)  # (B, T)
        return self._decode_rows(rows, lambda row, codes, device: codec.decode_continuous(
            speech_latents[row, None, : len(codes)].float().to(device)), codec)

    def _decode_rows(self, rows: torch.Tensor, decode, codec) -> list[np.ndarray]:
        """One waveform per row of (B, T) ids: `decode(row_index, codes, device)` on the row's codes (empty if none)."""
        waves = []
        for i, row in enumerate(rows):
            codes = self.speech_codes(row)
            if not codes:
                waves.append(np.zeros(0, dtype=np.float32))
                continue
            with torch.no_grad():
                wave = decode(i, codes, next(codec.parameters()).device)[0]
            waves.append(wave.float().cpu().numpy())
        return waves

    def _answer_tokens(self, text: str) -> tuple[list[int], list[float] | None]:
        """An answer's token ids and, for a spread layout, where each token's word starts (a fraction of the
        text's characters, standing in for its time in the speech: see `build_assistant_streams`)."""
        if not self.stream_layout.spreads_text:
            return self.tokenizer(text, add_special_tokens=False)["input_ids"], None
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        word_starts = [0] + [i + 1 for i, c in enumerate(text) if c.isspace()]
        starts = []
        for begin, _ in encoded["offset_mapping"]:
            begin = next((i for i in range(begin, len(text)) if not text[i].isspace()), begin)  # "Ġword" -> word
            starts.append(max(w for w in word_starts if w <= begin) / max(len(text), 1))
        return encoded["input_ids"], starts

    def answer_text_ids(self, ids: Sequence[int]) -> list[int]:
        """The answer part of a generated text stream: after the last `<|abos|>`, up to `<|aeos|>`, without the
        `<|text_pad|>`s a spread answer holds between its words."""
        ids = list(ids)
        layout = self.stream_layout
        abos, aeos = layout.assistant_bos_token_id, layout.assistant_eos_token_id
        if abos in ids:
            ids = ids[len(ids) - ids[::-1].index(abos):]
        if aeos in ids:
            ids = ids[: ids.index(aeos)]
        return [i for i in ids if i != layout.text_pad_token_id]

    def post_process_multimodal_output(
        self, generated_outputs, skip_special_tokens: bool = True, generation_mode: str | None = None, **kwargs
    ):
        """`generation_mode="text"`: the answer texts; `"audio"`: one float32 waveform per sample.

        `generated_outputs` is what `model.generate` returns (an object with `sequences` and, for audio,
        `waveform` (+ `waveform_lengths`) or `speech_ids` (+ `speech_latents` from the diffusion head)), or a
        tensor of text ids. Decoding `speech_ids` / `speech_latents` needs `codec=model.speech_codec`.
        """
        mode = generation_mode or "text"
        if mode == "text":
            sequences = getattr(generated_outputs, "sequences", generated_outputs)
            sequences = torch.as_tensor(sequences)
            sequences = sequences[None] if sequences.dim() == 1 else sequences
            answers = [self.answer_text_ids(row.tolist()) for row in sequences]
            return self.tokenizer.batch_decode(answers, skip_special_tokens=skip_special_tokens, **kwargs)
        if mode == "audio":
            waveform = getattr(generated_outputs, "waveform", None)
            if waveform is not None:
                lengths = getattr(generated_outputs, "waveform_lengths", None)
                waves = [torch.as_tensor(w).float().cpu().numpy() for w in waveform]
                if lengths is not None:
                    waves = [w[: int(n)] for w, n in zip(waves, lengths)]
                return waves
            speech_ids = getattr(generated_outputs, "speech_ids", None)
            codec = kwargs.get("codec")
            latents = getattr(generated_outputs, "speech_latents", None)
            if latents is not None and speech_ids is not None and codec is not None:  # diffusion head
                return self.decode_speech_latents(speech_ids, latents, codec)
            if speech_ids is None or codec is None:
                raise ValueError(
                    "generation_mode='audio' needs generate outputs with a `waveform`, or `speech_ids` plus "
                    "`codec=model.speech_codec`. Generate with generation_mode='audio'."
                )
            return self.decode_speech(speech_ids, codec)
        raise ValueError(f"generation_mode must be 'text' or 'audio', got {generation_mode!r}.")

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "input_features", "feature_attention_mask"]


__all__ = ["DEFAULT_CHAT_TEMPLATE", "DEFAULT_SYSTEM_PROMPT", "OmniDRCAProcessor", "SYSTEM_PROMPTS", "TASKS"]
