import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from modeling_omnidrca.tokenization import (
    CHAT_TOKENS,
    STREAM_SPECIAL_TOKENS,
    add_stream_special_tokens,
    stream_token_ids,
    train_text_tokenizer,
)

CORPUS = ["what is seven plus twelve", "seven plus twelve is nineteen", "the capital of france is paris"] * 20


def test_trained_tokenizer_has_stream_tokens_and_is_lossless(tmp_path):
    tok = train_text_tokenizer(CORPUS, vocab_size=320)
    ids = stream_token_ids(tok)
    assert len(set(ids.values())) == 4
    for token in (*CHAT_TOKENS, *STREAM_SPECIAL_TOKENS.values()):
        assert tok.convert_ids_to_tokens(tok.convert_tokens_to_ids(token)) == token
    # Byte-level BPE: text outside the training corpus still round-trips exactly.
    text = "Naïve café: 3.5 km, 東京!"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    # Frequent corpus words become single tokens.
    assert len(tok(" twelve", add_special_tokens=False)["input_ids"]) <= 2
    assert tok.padding_side == "left"
    # Special tokens are atomic: an audio slot is one id however many are written in a row.
    assert tok("<|AUDIO|><|AUDIO|><|AUDIO|>", add_special_tokens=False)["input_ids"] == [ids["audio_token_id"]] * 3

    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert stream_token_ids(loaded) == ids
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]


def test_vocab_too_small():
    with pytest.raises(ValueError, match="at least"):
        train_text_tokenizer(CORPUS, vocab_size=100)


def test_pretrained_tokenizer_gets_the_stream_tokens():
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel()
    bpe.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=280, special_tokens=["<s>"], show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", padding_side="right")
    before = len(tok)
    with pytest.raises(ValueError, match="add_stream_special_tokens"):
        stream_token_ids(tok)
    added = add_stream_special_tokens(tok)
    assert added == len(CHAT_TOKENS) + len(STREAM_SPECIAL_TOKENS) + 1  # + a pad token it lacked
    assert len(tok) == before + added
    assert min(stream_token_ids(tok).values()) >= before  # new rows at the end: old embeddings keep their ids
    assert add_stream_special_tokens(tok) == 0
    assert tok.padding_side == "left"  # generation appends to the prompts' ends
