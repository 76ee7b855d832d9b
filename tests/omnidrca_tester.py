"""Tiny nested configs and batches for the tests, in the spirit of transformers' `ModelTester`s."""

from __future__ import annotations

import math

import torch

from modeling_omnidrca import OmniDRCAConfig, build_assistant_streams
from modeling_omnidrca.streams import IGNORE_INDEX

TEXT_VOCAB = 96
# The stream-layout special tokens sit at the top of the tiny text vocabulary.
AUDIO_ID, ABOS_ID, AEOS_ID, TEXT_PAD_ID = 95, 94, 93, 92


def mel_frames_to_groups(frames: int, k: int) -> int:
    """Independent count of grouped audio positions: 100 Hz mel -> 50 Hz (stride-2 conv, padded) -> 25 Hz
    (pairs averaged, an odd last frame dropped) -> ceil(/k)."""
    t50 = math.ceil(frames / 2)
    t25 = t50 // 2
    return math.ceil(t25 / k)


TINY_DIFFUSION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, frequency_embedding_size=32)


class OmniDRCAModelTester:
    def __init__(
        self,
        group_size: int = 5,
        speech_delay: int = 2,
        speech_vocab_size: int = 32,
        # 175 = 3 (mod 4): the last 25 Hz frame then reads a conv window that reaches into padding,
        # so padded-batch vs alone equality really tests the masking.
        mel_frames: tuple[int, ...] = (300, 175),
        answer_lengths: tuple[tuple[int, int], ...] = ((4, 17), (6, 9)),  # (text tokens, speech codes) per row
        seed: int = 0,
        **config_overrides,
    ):
        self.group_size = group_size
        self.speech_delay = speech_delay
        self.speech_vocab_size = speech_vocab_size
        self.mel_frames = mel_frames
        self.answer_lengths = answer_lengths
        self.seed = seed
        self.config_overrides = config_overrides

    @property
    def batch_size(self) -> int:
        return len(self.mel_frames)

    def get_config(self) -> OmniDRCAConfig:
        kwargs = dict(
            text_config=dict(
                model_type="qwen2", vocab_size=TEXT_VOCAB, hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
            ),
            audio_config=dict(
                model_type="whisper", d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64,
                num_mel_bins=80, max_source_positions=1500,
            ),
            srh_config=dict(
                model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            ),
            # 4·4·2 = 32 codes: a tiny codec whose codebook is the tiny speech vocabulary.
            codec_config=dict(
                fsq_levels=[4, 4, 2], encoder_hidden_size=16, encoder_layers=1, decoder_hidden_size=16,
                decoder_layers=1,
            ),
            group_size=self.group_size,
            speech_delay=self.speech_delay,
            speech_vocab_size=self.speech_vocab_size,
            audio_token_id=AUDIO_ID,
            assistant_bos_token_id=ABOS_ID,
            assistant_eos_token_id=AEOS_ID,
            text_pad_token_id=TEXT_PAD_ID,
        )
        kwargs.update(self.config_overrides)
        return OmniDRCAConfig(**kwargs)

    def prepare_inputs(self, config: OmniDRCAConfig, *, speech: bool = True, transcripts: bool = True) -> dict:
        """A right-padded batch: [bos, <|AUDIO|>*G, sep] prompt, then an assistant turn in parallel streams."""
        gen = torch.Generator().manual_seed(self.seed)
        k = config.group_size
        rows = []
        for frames, (n_text, n_codes) in zip(self.mel_frames, self.answer_lengths):
            prompt = [1] + [config.audio_token_id] * mel_frames_to_groups(frames, k) + [2]
            # Ids 10..89 avoid the special tokens of both the tiny config (92..95) and BPE tokenizers (0..8).
            text = torch.randint(10, 90, (n_text,), generator=gen).tolist()
            codes = torch.randint(0, config.speech_vocab_size, (n_codes,), generator=gen).tolist() if speech else None
            latents = None
            if speech and config.speech_head_type == "diffusion":  # bounded like the codec's latents
                latents = torch.rand(n_codes, config.codec_config.latent_dim, generator=gen) * 2 - 1
            turn = build_assistant_streams(text, codes, config, latents)
            n = len(prompt)
            rows.append(
                dict(
                    input_ids=torch.cat([torch.tensor(prompt), turn.input_ids]),
                    labels=torch.cat([torch.full((n,), IGNORE_INDEX), turn.labels]),
                    speech_ids=torch.cat([torch.full((n, k), config.speech_pad_token_id), turn.speech_ids]),
                    speech_labels=torch.cat([torch.full((n, k), IGNORE_INDEX), turn.speech_labels]),
                )
            )
            if latents is not None:
                rows[-1]["speech_latents"] = torch.cat([torch.zeros(n, k, latents.shape[1]), turn.speech_latents])
        length = max(r["input_ids"].shape[0] for r in rows)

        def pad(x: torch.Tensor, value: int) -> torch.Tensor:
            return torch.cat([x, torch.full((length - x.shape[0], *x.shape[1:]), value, dtype=x.dtype)])

        batch = dict(
            input_ids=torch.stack([pad(r["input_ids"], 0) for r in rows]),
            attention_mask=torch.stack([pad(torch.ones_like(r["input_ids"]), 0) for r in rows]),
            labels=torch.stack([pad(r["labels"], IGNORE_INDEX) for r in rows]),
        )
        if speech:
            batch["speech_ids"] = torch.stack([pad(r["speech_ids"], config.speech_pad_token_id) for r in rows])
            batch["speech_labels"] = torch.stack([pad(r["speech_labels"], IGNORE_INDEX) for r in rows])
            if "speech_latents" in rows[0]:
                batch["speech_latents"] = torch.stack([pad(r["speech_latents"], 0) for r in rows])
        max_frames = max(self.mel_frames)
        batch["input_features"] = torch.randn(self.batch_size, config.audio_config.num_mel_bins, max_frames, generator=gen)
        batch["feature_attention_mask"] = torch.stack(
            [(torch.arange(max_frames) < f).long() for f in self.mel_frames]
        )
        if transcripts:
            batch["transcript_ids"] = torch.randint(10, 90, (self.batch_size, 7), generator=gen)
            batch["transcript_attention_mask"] = torch.ones(self.batch_size, 7, dtype=torch.long)
            batch["transcript_attention_mask"][-1, 5:] = 0
        return batch
