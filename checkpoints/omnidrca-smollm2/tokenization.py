"""Text tokenizers for OmniDRCA: an offline byte-level BPE, and the stream-layout special tokens.

The demo model trains its own small BPE on the project's corpus (no download). Real backbones bring
their own tokenizer; `add_stream_special_tokens` adds what the chat template and the parallel-stream
layout need, after which the model's embeddings must grow to `len(tokenizer)`.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

PAD_TOKEN = "<|endoftext|>"
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
# Named special tokens: the name is the attribute the tokenizer and processor expose (tokenizer.audio_token).
STREAM_SPECIAL_TOKENS = {
    "audio_token": "<|AUDIO|>",  # one slot per grouped 5 Hz audio embedding
    "audio_bos_token": "<|audio_bos|>",
    "audio_eos_token": "<|audio_eos|>",
    "assistant_bos_token": "<|abos|>",  # first text token of an assistant stream
    "assistant_eos_token": "<|aeos|>",  # ends the assistant text stream
    "text_pad_token": "<|text_pad|>",  # text-stream filler while speech is still running
}
# Config fields of OmniDRCAConfig that hold the ids of the tokens above.
CONFIG_TOKEN_FIELDS = {
    "audio_token_id": "audio_token",
    "assistant_bos_token_id": "assistant_bos_token",
    "assistant_eos_token_id": "assistant_eos_token",
    "text_pad_token_id": "text_pad_token",
}


def train_text_tokenizer(
    texts: Iterable[str], vocab_size: int = 2000, min_frequency: int = 2, model_max_length: int = 4096
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE (any text is encodable, no unknown token) with the stream special tokens.

    Args:
        texts: training sentences (the corpus's prompts, answers and transcripts).
        vocab_size: target size, special tokens and the 256 byte symbols included.
    Returns:
        A fast tokenizer with left padding (generation batches are left-padded).
    """
    specials = [PAD_TOKEN, *CHAT_TOKENS, *STREAM_SPECIAL_TOKENS.values()]
    if vocab_size < 256 + len(specials):
        raise ValueError(f"vocab_size must be at least {256 + len(specials)} (bytes + special tokens), got {vocab_size}.")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token=PAD_TOKEN,
        eos_token=CHAT_TOKENS[1],
        extra_special_tokens=dict(STREAM_SPECIAL_TOKENS),
        padding_side="left",
        model_max_length=model_max_length,
    )


def add_stream_special_tokens(tokenizer: PreTrainedTokenizerBase) -> int:
    """Add the chat and stream-layout special tokens a pretrained backbone's tokenizer lacks, and pad on the left.

    Returns the number of tokens added; when it is > 0, grow the model's embeddings to
    `len(tokenizer)` (e.g. `compose_from_backbones(..., vocab_size=len(tokenizer))`).
    """
    added = tokenizer.add_special_tokens(
        {"additional_special_tokens": [t for t in (*CHAT_TOKENS, *STREAM_SPECIAL_TOKENS.values())]},
        replace_extra_special_tokens=False,
    )
    if tokenizer.pad_token is None:
        added += tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    tokenizer.padding_side = "left"  # prompts are generated from their end (SmolLM2's tokenizer pads right)
    return added


def stream_token_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """The `OmniDRCAConfig` id fields for this tokenizer; raises if a stream token is missing."""
    ids = {}
    for field, name in CONFIG_TOKEN_FIELDS.items():
        token = STREAM_SPECIAL_TOKENS[name]
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id or tokenizer.convert_ids_to_tokens(token_id) != token:
            raise ValueError(
                f"The tokenizer has no {token!r} token. Call `modeling_omnidrca.tokenization.add_stream_special_tokens"
                "(tokenizer)` and grow the model's embeddings to len(tokenizer)."
            )
        ids[field] = token_id
    return ids


__all__ = [
    "CHAT_TOKENS",
    "PAD_TOKEN",
    "STREAM_SPECIAL_TOKENS",
    "add_stream_special_tokens",
    "stream_token_ids",
    "train_text_tokenizer",
]
