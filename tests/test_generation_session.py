"""The generation session: rows join and leave a running batch, extra step embeddings (the serving hooks)."""

import pytest
import torch

from modeling_omnidrca.generation_session import GenerationSession
from modeling_omnidrca.generation_settings import GenerationSettings, PromptBatch
from test_generation import build, prompts


def alone(config, frames, seed):
    """The one-row prompt the processor would build for this clip alone (no padding)."""
    inputs = prompts(config, (frames,), seed=seed)
    return {k: inputs[k] for k in ("input_ids", "input_features", "feature_attention_mask")}


def answer(out, row, prompt_length, rows):
    """(text answer, speech codes) of `row`: the last `rows` text ids, and the codes before its eos."""
    n = int(out.speech_lengths[row]) if out.speech_ids is not None else 0
    speech = None if out.speech_ids is None else out.speech_ids[row, :n]
    return out.sequences[row, -rows:] if rows else out.sequences[row, prompt_length:], speech


def assert_same_answer(got, want):
    assert torch.equal(got[0], want[0])
    if want[1] is not None:
        assert torch.equal(got[1], want[1])


@pytest.mark.parametrize("mode", ["text", "audio"])
def test_a_row_joining_a_running_batch_gets_what_it_gets_alone(mode):
    config, model = build()
    first, late = alone(config, 300, seed=0), alone(config, 175, seed=1)
    kw = dict(generation_mode=mode, max_new_tokens=9)
    want_first = model.generate(**first, **kw)
    want_late = model.generate(**late, **kw)

    session = model.start_session(**first, **kw)
    for _ in range(3):
        session.step()
    rows = session.add_rows(PromptBatch.check(**late))
    assert rows == [1]
    while not session.finished:
        session.step()
    late_out = session.remove_rows([1])
    first_out = session.finish()

    rows_first = want_first.sequences.shape[1] - first["input_ids"].shape[1]
    rows_late = want_late.sequences.shape[1] - late["input_ids"].shape[1]
    assert rows_first == rows_late == 9
    # the first row ran 3 more steps than its limit allows alone: it padded (text pad, [pad] groups) meanwhile
    got_first = first_out.sequences[0, first["input_ids"].shape[1] : first["input_ids"].shape[1] + 9]
    assert torch.equal(got_first, want_first.sequences[0, -9:])
    assert_same_answer(answer(late_out, 0, None, 9), answer(want_late, 0, None, 9))
    if mode == "audio":
        n = int(want_first.speech_lengths[0])
        assert torch.equal(first_out.speech_ids[0, :n], want_first.speech_ids[0, :n])
        assert late_out.speech_ids.shape == want_late.speech_ids.shape
        torch.testing.assert_close(late_out.waveform, want_late.waveform, atol=1e-5, rtol=1e-4)


def test_a_removed_row_does_not_disturb_the_others():
    config, model = build()
    batch = prompts(config, (300, 175))
    kw = dict(generation_mode="audio", max_new_tokens=8)
    want = model.generate(**batch, **kw)
    session = model.start_session(**batch, **kw)
    for _ in range(3):
        session.step()
    gone = session.remove_rows([0])
    assert gone.sequences.shape[1] == batch["input_ids"].shape[1] + 3
    while not session.finished:
        session.step()
    out = session.finish()
    assert torch.equal(out.sequences[0], want.sequences[1])
    assert torch.equal(out.speech_ids[0], want.speech_ids[1])
    assert torch.equal(gone.sequences[0], want.sequences[0, : gone.sequences.shape[1]])


@pytest.mark.parametrize("as_dict", [False, True])
def test_zero_extra_embeddings_change_nothing_and_others_do(as_dict):
    config, model = build()
    batch = prompts(config, (300, 175))
    kw = dict(generation_mode="audio", max_new_tokens=6)
    want = model.generate(**batch, **kw)
    hidden = config.text_config.hidden_size

    def run(extra):
        session = model.start_session(**batch, **kw)
        while not session.finished:
            session.step(extra_embeds=extra)
        return session.finish()

    zeros = {1: torch.zeros(hidden)} if as_dict else torch.zeros(2, hidden)
    got = run(zeros)
    assert torch.equal(got.sequences, want.sequences) and torch.equal(got.speech_ids, want.speech_ids)
    loud = {1: torch.full((hidden,), 50.0)} if as_dict else torch.full((2, hidden), 50.0)
    moved = run(loud)
    assert not torch.equal(moved.speech_ids, want.speech_ids) or not torch.equal(moved.sequences, want.sequences)


def test_generate_is_a_loop_over_the_session():
    config, model = build()
    inputs = prompts(config, (300, 175))
    kw = dict(generation_mode="audio", max_new_tokens=5)
    settings = GenerationSettings.resolve(model, **kw)
    session = GenerationSession(model, settings)
    session.prefill(PromptBatch.check(**inputs))
    steps = []
    while not session.finished:
        steps.append(session.step())
    out = session.finish()
    want = model.generate(**inputs, **kw)
    assert len(steps) == 5 and steps[0].speech_ids.shape == (2, config.group_size)
    assert torch.equal(out.sequences, want.sequences) and torch.equal(out.speech_ids, want.speech_ids)


def test_session_hooks_reject_what_they_cannot_keep():
    config, model = build()
    inputs = prompts(config)
    session = model.start_session(**inputs, generation_mode="text", max_new_tokens=4, output_scores=True,
                                  return_dict_in_generate=True)
    with pytest.raises(ValueError, match="expected use_cache=True"):
        session.add_rows(PromptBatch.check(**inputs))
    session = model.start_session(**inputs, max_new_tokens=4)
    with pytest.raises(ValueError, match=r"extra_embeds.*must be \(batch, hidden\)"):
        session.step(extra_embeds=torch.zeros(3, 3))


def test_trim_cache_drops_the_padding_of_rows_that_left_and_changes_no_answer():
    config, model = build()
    long_prompt, short_prompt = alone(config, 300, seed=0), alone(config, 100, seed=1)
    kw = dict(generation_mode="text", max_new_tokens=9)
    want = model.generate(**short_prompt, **kw)
    session = model.start_session(**long_prompt, **kw)
    session.step()
    session.add_rows(PromptBatch.check(**short_prompt))  # left-padded to the long row's width
    session.step()
    session.remove_rows([0])
    width = session.attention_mask.shape[1]
    dropped = session.trim_cache()
    assert dropped > 0 and session.attention_mask.shape[1] == width - dropped
    assert bool(session.attention_mask[:, 0].all()) and session.cache.get_seq_length() == width - dropped
    assert session.trim_cache() == 0  # nothing left to drop
    while not session.finished:
        session.step()
    assert torch.equal(session.finish().sequences[0, -9:], want.sequences[0, -9:])
