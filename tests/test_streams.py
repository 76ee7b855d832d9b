import math
import random
from types import SimpleNamespace

import pytest
import torch

from modeling_omnidrca import build_assistant_streams
from modeling_omnidrca.streams import srh_previous_ids

X = -100
# Hand-picked ids, as a tokenizer/codec would assign them: codes 0..99, then speech bos/eos/pad.
ABOS, AEOS, TPAD = 500, 501, 502
BOS, EOS, PAD = 100, 101, 102


def cfg(k=5, d=2):
    return SimpleNamespace(
        group_size=k, speech_delay=d, speech_vocab_size=100,
        assistant_bos_token_id=ABOS, assistant_eos_token_id=AEOS, text_pad_token_id=TPAD,
        speech_bos_token_id=BOS, speech_eos_token_id=EOS, speech_pad_token_id=PAD,
    )


def test_layout_k5_d2_speech_outlasts_text():
    # DESIGN.md §2 drawn by hand: text "7 8", 12 codes c0..c11 (ids 10..21), k=5, delay 2 groups.
    s = build_assistant_streams([7, 8], list(range(10, 22)), cfg())
    assert s.input_ids.tolist() == [ABOS, 7, 8, AEOS, TPAD]
    assert s.labels.tolist() == [X, 7, 8, AEOS, X]
    assert s.speech_ids.tolist() == [
        [BOS] * 5,
        [BOS] * 5,
        [10, 11, 12, 13, 14],
        [15, 16, 17, 18, 19],
        [20, 21, EOS, PAD, PAD],
    ]
    assert s.speech_labels.tolist() == [
        [X] * 5,
        [X] * 5,
        [10, 11, 12, 13, 14],
        [15, 16, 17, 18, 19],
        [20, 21, EOS, X, X],
    ]


def test_layout_eos_gets_its_own_group_and_text_outlasts_speech():
    # 5 codes fill one group exactly, so [eos] opens the next; text is longer than the speech.
    s = build_assistant_streams([1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4], cfg())
    assert s.input_ids.tolist() == [ABOS, 1, 2, 3, 4, 5, 6, AEOS]
    assert s.speech_ids.tolist() == [[BOS] * 5, [BOS] * 5, [0, 1, 2, 3, 4], [EOS, PAD, PAD, PAD, PAD]] + [[PAD] * 5] * 4
    assert s.speech_labels.tolist() == [[X] * 5, [X] * 5, [0, 1, 2, 3, 4], [EOS, X, X, X, X]] + [[X] * 5] * 4


def test_layout_k1_no_delay():
    s = build_assistant_streams([7], [3, 4, 5], cfg(k=1, d=0))
    assert s.input_ids.tolist() == [ABOS, 7, AEOS, TPAD]
    assert s.speech_ids.tolist() == [[3], [4], [5], [EOS]]
    assert s.speech_labels.tolist() == [[3], [4], [5], [EOS]]


def test_layout_text_only_answer_has_silent_speech():
    s = build_assistant_streams([7, 8, 9], None, cfg())
    assert s.input_ids.tolist() == [ABOS, 7, 8, 9, AEOS]
    assert s.speech_ids.tolist() == [[PAD] * 5] * 5
    assert (s.speech_labels == X).all()


@pytest.mark.parametrize("k,d", [(1, 0), (1, 2), (5, 2), (3, 1), (5, 0)])
def test_layout_lengths_and_contents_random(k, d):
    rng = random.Random(k * 10 + d)
    for _ in range(50):
        text = [rng.randrange(1000) for _ in range(rng.randrange(0, 12))]
        codes = [rng.randrange(100) for _ in range(rng.randrange(0, 40))]
        s = build_assistant_streams(text, codes, cfg(k, d))
        steps = max(len(text) + 2, d + math.ceil((len(codes) + 1) / k))
        assert s.input_ids.shape == (steps,) and s.speech_ids.shape == (steps, k)
        flat = s.speech_ids.flatten().tolist()
        # Reading the speech stream back at 25 Hz gives: delay, codes, eos, then only padding.
        assert flat[: d * k] == [BOS] * (d * k)
        assert flat[d * k : d * k + len(codes) + 1] == codes + [EOS]
        assert set(flat[d * k + len(codes) + 1 :]) <= {PAD}
        assert [t for t in s.labels.tolist() if t != X] == text + [AEOS]
        assert [t for t in s.speech_labels.flatten().tolist() if t != X] == codes + [EOS]


def test_srh_previous_ids_by_hand():
    speech = torch.tensor([[[1, 2, 3], [4, 5, 6], [7, 8, 9]]])  # (B=1, L=3, k=3)
    assert srh_previous_ids(speech).tolist() == [[[3, 4, 5], [6, 7, 8]]]


def test_bad_codes_and_missing_ids():
    with pytest.raises(ValueError, match="codebook"):
        build_assistant_streams([1], [3, 100], cfg())
    bad = cfg()
    bad.text_pad_token_id = None
    with pytest.raises(ValueError, match="text_pad_token_id"):
        build_assistant_streams([1], [3], bad)


def test_stream_layout_is_one_typed_object_shared_by_config_processor_and_builder():
    import dataclasses
    from pathlib import Path

    from transformers import AutoConfig, AutoProcessor

    from modeling_omnidrca.streams import StreamLayout

    fixture = Path(__file__).parent / "fixtures" / "tiny-random-omnidrca"
    config = AutoConfig.from_pretrained(fixture)
    processor = AutoProcessor.from_pretrained(fixture)
    layout = config.stream_layout
    assert isinstance(layout, StreamLayout) and layout == processor.stream_layout
    assert StreamLayout.from_config(processor) is processor.stream_layout
    with pytest.raises(dataclasses.FrozenInstanceError):
        layout.group_size = 1
    assert layout.speech_never_sampled == [config.speech_bos_token_id, config.speech_pad_token_id]
    codes = [1, 2, 3]
    by_layout = build_assistant_streams([7, 8], codes, layout)
    by_config = build_assistant_streams([7, 8], codes, config)
    assert torch.equal(by_layout.speech_ids, by_config.speech_ids) and torch.equal(by_layout.input_ids, by_config.input_ids)
