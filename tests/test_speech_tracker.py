"""The SRH's speech tracker (`speech_tracker_layers`): it reads each answer's own (text, speech) rows, the session
gives it the same rows the teacher-forced forward does, and a fresh one changes nothing until trained."""

import pytest
import torch
from torch import nn

from modeling_omnidrca import OmniDRCAForConditionalGeneration
from modeling_omnidrca.generation_settings import PromptBatch
from modeling_omnidrca.speech_tracker import answer_starts, attach_speech_tracker
from omnidrca_tester import ABOS_ID, OmniDRCAModelTester
from test_generation import controls, prompts
from test_generation_session import alone


def tiny(layers: int = 2, seed: int = 0, **overrides):
    tester = OmniDRCAModelTester(answer_lengths=((2, 30), (3, 24)), speech_tracker_layers=layers,
                                 speech_read="after_text", **overrides)
    config = tester.get_config()
    torch.manual_seed(seed)
    model = OmniDRCAForConditionalGeneration(config).eval()
    for p in model.speech_head.tracker.out_proj.parameters():  # a trained tracker: its output is not zero
        nn.init.normal_(p, std=0.5)
    return tester, config, model


def test_bad_tracker_settings_are_refused():
    with pytest.raises(ValueError, match="speech_tracker_layers` must be an int >= 0"):
        OmniDRCAModelTester(speech_tracker_layers=-1).get_config()
    with pytest.raises(ValueError, match="speech_head_type='srh'"):
        OmniDRCAModelTester(speech_head_type="diffusion", speech_tracker_layers=2).get_config()


def test_answer_starts_finds_the_last_assistant_turn():
    ids = torch.tensor([[1, ABOS_ID, 5, ABOS_ID, 7], [1, 2, 3, 4, 5]])
    assert answer_starts(ids, ABOS_ID).tolist() == [3, 5]


def test_the_tracker_reads_the_answer_only_and_changes_the_speech_loss():
    tester, config, model = tiny()
    inputs = tester.prepare_inputs(config)
    start = answer_starts(inputs["input_ids"], ABOS_ID)
    tracked = model.speech_head.track(inputs["input_ids"], inputs["speech_ids"], None,
                                      model.get_input_embeddings(), model.model.speech_embed)
    before = torch.arange(tracked.shape[1])[None] < start[:, None]
    assert (tracked[before] == 0).all() and (tracked[~before].abs().sum(-1) > 0).all()
    # a prompt token changed before the answer leaves the tracker as it was
    other = inputs["input_ids"].clone()
    other[:, 0] = 3
    again = model.speech_head.track(other, inputs["speech_ids"], None, model.get_input_embeddings(),
                                    model.model.speech_embed)
    torch.testing.assert_close(again, tracked)
    with torch.no_grad():
        with_tracker = model(**inputs).speech_loss
        model.speech_head.tracker.out_proj.weight.zero_()
        model.speech_head.tracker.out_proj.bias.zero_()
        without = model(**inputs).speech_loss
    assert not torch.isclose(with_tracker, without)
    with pytest.raises(ValueError, match="pass `input_ids`"):
        model.speech_head.loss(torch.zeros(*inputs["input_ids"].shape, config.text_config.hidden_size),
                               inputs["speech_ids"], inputs["speech_labels"], embed=model.model.speech_embed)


def test_generated_speech_logits_equal_one_teacher_forced_forward():
    """Step by step, the SRH sees the tracker state the training forward gives the same streams."""
    _, config, model = tiny(seed=1)
    batch = prompts(config, (300, 175))  # left-padded: the rows' answers start at different positions
    out = model.generate(**batch, generation_mode="audio", max_new_tokens=9, output_logits=True,
                         **controls(config, text_end_row=3))
    k, d, steps = config.group_size, config.speech_delay, out.logits.shape[1]
    lp = batch["input_ids"].shape[1]
    made = out.speech_ids.view(2, steps - d, k)
    speech_rows = torch.cat([torch.full((2, lp, k), config.speech_pad_token_id),
                             torch.full((2, d, k), config.speech_bos_token_id), made], 1)
    labels = torch.full_like(speech_rows, -100)
    labels[:, lp + d :] = made
    mask = torch.cat([batch["attention_mask"], torch.ones(2, steps, dtype=torch.long)], dim=1)
    with torch.no_grad():
        full = model(input_ids=out.sequences, speech_ids=speech_rows, speech_labels=labels, attention_mask=mask,
                     position_ids=(mask.cumsum(-1) - 1).clamp(min=0), input_features=batch["input_features"],
                     feature_attention_mask=batch["feature_attention_mask"])
    generated = out.speech_logits[:, d:]  # (B, steps - d, k, Vs); the delay's rows sampled nothing
    assert torch.isfinite(generated).all()
    torch.testing.assert_close(generated.flatten(0, 1), full.speech_logits, atol=1e-4, rtol=1e-4)


def test_a_row_joining_a_session_is_tracked_from_its_own_answer():
    _, config, model = tiny(seed=2)
    first, late = alone(config, 300, seed=0), alone(config, 175, seed=1)
    kw = dict(generation_mode="audio", max_new_tokens=9)
    want = model.generate(**late, **kw)
    session = model.start_session(**first, **kw)
    for _ in range(3):
        session.step()
    session.add_rows(PromptBatch.check(**late))
    while not session.finished:
        session.step()
    got = session.remove_rows([1])
    n = int(want.speech_lengths[0])
    assert n > 0 and torch.equal(got.speech_ids[0, :n], want.speech_ids[0, :n])


def test_attached_tracker_starts_silent_and_is_saved(tmp_path):
    tester = OmniDRCAModelTester(speech_read="after_text")
    config = tester.get_config()
    torch.manual_seed(0)
    model = OmniDRCAForConditionalGeneration(config).eval()
    inputs = tester.prepare_inputs(config)
    with torch.no_grad():
        before = model(**inputs).speech_logits
        attach_speech_tracker(model, 1)
        after = model(**inputs).speech_logits
    torch.testing.assert_close(after, before)
    with pytest.raises(ValueError, match="already has a speech tracker"):
        attach_speech_tracker(model, 1)
    nn.init.normal_(model.speech_head.tracker.out_proj.weight, std=0.5)
    model.save_pretrained(tmp_path)
    loaded = OmniDRCAForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.config.speech_tracker_layers == 1
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).speech_logits, model(**inputs).speech_logits)
