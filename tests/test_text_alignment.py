"""`text_alignment="spread"`: a spoken answer's text tokens spread over its speech, learned pads between them."""

import dataclasses
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoProcessor

from modeling_omnidrca import OmniDRCAConfig, build_assistant_streams
from modeling_omnidrca.streams import StreamLayout
from omnidrca_tester import TEXT_PAD_ID
from test_generation import build, controls, prompts
from test_streams import ABOS, AEOS, BOS, EOS, PAD, TPAD, X, cfg

FIXTURE = Path(__file__).parent / "fixtures" / "tiny-random-omnidrca"


def spread(k=5, d=2):
    layout = cfg(k, d)
    layout.text_alignment = "spread"
    return layout


def test_spread_layout_by_hand():
    # 3 words, 27 codes + [eos] = 6 groups: word j at step 1 + j*6//3 = 1, 3, 5; <aeos> right after the last.
    s = build_assistant_streams([7, 8, 9], list(range(10, 37)), spread())
    assert s.input_ids.tolist() == [ABOS, 7, TPAD, 8, TPAD, 9, AEOS, TPAD]
    assert s.labels.tolist() == [X, 7, TPAD, 8, TPAD, 9, AEOS, X]
    assert s.speech_ids[:2].tolist() == [[BOS] * 5] * 2
    assert s.speech_ids.flatten().tolist()[10:] == list(range(10, 37)) + [EOS, PAD, PAD]


def test_spread_follows_given_word_starts_and_never_reorders():
    # 6 groups; the second and third tokens are one word (start 0.5), the fourth word starts at 0.9.
    s = build_assistant_streams([7, 8, 9, 6], list(range(10, 37)), spread(), text_starts=[0.0, 0.5, 0.5, 0.9])
    assert s.input_ids.tolist() == [ABOS, 7, TPAD, TPAD, 8, 9, 6, AEOS]  # rows 1, 1+3=4, then 5, 1+5=6
    with pytest.raises(ValueError, match="one fraction per answer token"):
        build_assistant_streams([7, 8], list(range(10, 37)), spread(), text_starts=[0.0])


def test_the_processor_starts_each_token_at_its_words_character_offset():
    processor = AutoProcessor.from_pretrained(FIXTURE, text_alignment="spread")
    text = "one twentyseven three"
    ids, starts = processor._answer_tokens(text)
    assert ids == processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    words = {0.0, 4 / len(text), 16 / len(text)}
    assert set(starts) == words and starts == sorted(starts) and len(ids) > 3  # some word has several tokens
    assert AutoProcessor.from_pretrained(FIXTURE)._answer_tokens(text) == (ids, None)


def test_spread_keeps_the_speech_stream_and_text_only_answers_as_leading():
    rng = random.Random(0)
    for _ in range(100):
        text = [rng.randrange(400) for _ in range(rng.randrange(0, 12))]  # below the stream specials (500-502)
        codes = [rng.randrange(100) for _ in range(rng.randrange(0, 60))]
        lead, spr = build_assistant_streams(text, codes, cfg()), build_assistant_streams(text, codes, spread())
        n = min(lead.speech_ids.shape[0], spr.speech_ids.shape[0])
        assert torch.equal(lead.speech_ids[:n], spr.speech_ids[:n])
        assert set(spr.speech_ids[n:].flatten().tolist()) <= {PAD}
        # the same words in the same order; only pads (learned, up to <aeos>) between them
        assert [t for t in spr.input_ids.tolist() if t != TPAD] == [ABOS, *text, AEOS]
        end = spr.input_ids.tolist().index(AEOS)
        assert spr.labels[1 : end + 1].tolist() == spr.input_ids[1 : end + 1].tolist()
        assert (spr.labels[end + 1 :] == X).all()
        # never ahead of the leading layout; <aeos> by the speech's last group (d=2 + G groups of codes + [eos])
        rows = [i for i, t in enumerate(spr.input_ids.tolist()) if t not in (TPAD, ABOS)]
        assert all(r >= i + 1 for i, r in enumerate(rows))
        groups = -(-(len(codes) + 1) // 5)
        assert rows[-1] <= max(len(text) + 1, 2 + groups - 1)
        text_only = build_assistant_streams(text, None, spread())
        assert text_only.input_ids.tolist() == [ABOS, *text, AEOS]


def test_alignment_is_validated_saved_and_checked_against_the_processor(tmp_path):
    with pytest.raises(ValueError, match="text_alignment.*'leading'"):
        OmniDRCAConfig(text_alignment="aligned")
    with pytest.raises(ValueError, match="text_alignment"):
        StreamLayout(group_size=5, speech_delay=2, speech_vocab_size=8, speech_bos_token_id=8,
                     speech_eos_token_id=9, speech_pad_token_id=10, text_alignment="moshi")
    config = AutoConfig.from_pretrained(FIXTURE)
    processor = AutoProcessor.from_pretrained(FIXTURE)
    assert config.stream_layout.text_alignment == processor.stream_layout.text_alignment == "leading"
    config.text_alignment = "spread"
    with pytest.raises(ValueError, match="text_alignment: processor leading vs model spread"):
        processor.check_model_compatibility(config)
    config.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).stream_layout.spreads_text
    spread_processor = AutoProcessor.from_pretrained(FIXTURE, text_alignment="spread")
    spread_processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert reloaded.stream_layout == config.stream_layout
    reloaded.check_model_compatibility(config)


def test_the_processor_drops_the_pads_between_spread_words():
    processor = AutoProcessor.from_pretrained(FIXTURE)
    layout = processor.stream_layout
    words = processor.tokenizer("one two three", add_special_tokens=False)["input_ids"]
    spread_ids = [layout.assistant_bos_token_id, words[0], layout.text_pad_token_id, *words[1:],
                  layout.text_pad_token_id, layout.assistant_eos_token_id, layout.text_pad_token_id]
    assert processor.answer_text_ids(spread_ids) == words
    got = processor.post_process_multimodal_output(torch.tensor([spread_ids]), skip_special_tokens=False)
    assert got == [processor.tokenizer.decode(words)]


class PadFavoured(torch.nn.Module):
    """The model's text head with a huge bonus on `<|text_pad|>`: whenever it may be sampled, it is."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, hidden):
        logits = self.head(hidden).clone()
        logits[..., TEXT_PAD_ID] += 1e4
        return logits


@pytest.mark.parametrize("alignment,mode,pads_sampled", [
    ("spread", "audio", True), ("spread", "text", False), ("leading", "audio", False),
])
def test_generation_samples_pads_only_in_a_spread_spoken_answer(alignment, mode, pads_sampled):
    config, model = build()
    config.text_alignment = alignment
    model.lm_head = PadFavoured(model.lm_head)
    inputs = prompts(config)
    out = model.generate(**inputs, generation_mode=mode, max_new_tokens=8, **controls(config, speech_codes=12))
    answer = out.sequences[0, inputs["input_ids"].shape[1] :].tolist()
    assert answer[0] != TEXT_PAD_ID  # <abos> stays forced
    assert (set(answer[1:]) == {TEXT_PAD_ID}) == pads_sampled
    if not pads_sampled:
        assert TEXT_PAD_ID not in answer[1:]


def test_layout_dataclass_stays_frozen_with_the_new_field():
    layout = StreamLayout.from_fields(spread())
    assert layout.spreads_text and layout.text_banned(True) == [ABOS]
    assert layout.text_banned(False) == [ABOS, TPAD]
    assert StreamLayout.from_fields(cfg()).text_alignment == "leading"
    with pytest.raises(dataclasses.FrozenInstanceError):
        layout.text_alignment = "leading"
