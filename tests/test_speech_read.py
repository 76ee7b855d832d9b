"""`speech_read="after_text"`: the backbone reads a speech group only where the text input pads; the SRH and the
generation session see the same streams as always."""

import pytest
import torch

from modeling_omnidrca import OmniDRCAConfig, OmniDRCAForConditionalGeneration
from modeling_omnidrca.streams import StreamLayout, gate_speech_ids, srh_previous_ids
from omnidrca_tester import ABOS_ID, AEOS_ID, TEXT_PAD_ID, OmniDRCAModelTester
from test_generation import controls, prompts


def tiny(speech_read: str, seed: int = 0):
    # Short texts and long speech: a few codes beside answer tokens, most beside the text's padding.
    tester = OmniDRCAModelTester(answer_lengths=((2, 30), (3, 24)), speech_read=speech_read)
    config = tester.get_config()
    torch.manual_seed(seed)
    return tester, config, OmniDRCAForConditionalGeneration(config).eval()


def test_gate_pads_the_groups_beside_answer_text_and_keeps_the_rest():
    _, config, _ = tiny("after_text")
    text = torch.tensor([[ABOS_ID, 40, 41, AEOS_ID, TEXT_PAD_ID, TEXT_PAD_ID]])
    speech = torch.randint(0, config.speech_vocab_size, (1, 6, 5))
    gated = gate_speech_ids(config, text, speech)
    assert (gated[0, :4] == config.speech_pad_token_id).all()  # <abos>, the answer and <aeos> read no speech
    assert torch.equal(gated[0, 4:], speech[0, 4:])
    assert torch.equal(gate_speech_ids(config, None, speech), speech)  # inputs_embeds callers gate themselves
    _, always, _ = tiny("always")
    assert gate_speech_ids(always, text, speech) is speech


def test_bad_speech_read_is_refused_with_the_choices():
    with pytest.raises(ValueError, match=r"speech_read.*'always', 'after_text'"):
        OmniDRCAModelTester(speech_read="sometimes").get_config()
    with pytest.raises(ValueError, match="speech_head_type='diffusion'"):
        OmniDRCAModelTester(speech_head_type="diffusion", speech_read="after_text").get_config()
    with pytest.raises(ValueError, match="text_pad_token_id"):
        OmniDRCAModelTester(speech_read="after_text", text_pad_token_id=None).get_config()
    assert StreamLayout.from_fields(OmniDRCAConfig()).speech_read == "always"  # configs saved before the field


@pytest.mark.parametrize("speech_read", ["always", "after_text"])
def test_the_backbone_reads_speech_only_where_the_text_pads(speech_read):
    tester, config, model = tiny(speech_read)
    inputs = tester.prepare_inputs(config)
    other = dict(inputs, speech_ids=inputs["speech_ids"].clone())
    codes = other["speech_ids"] < config.speech_vocab_size
    other["speech_ids"][codes] = (other["speech_ids"][codes] + 7) % config.speech_vocab_size
    keys = ("input_ids", "speech_ids", "attention_mask", "input_features", "feature_attention_mask")
    with torch.no_grad():
        first = model.model(**{k: inputs[k] for k in keys}).last_hidden_state
        second = model.model(**{k: other[k] for k in keys}).last_hidden_state
    moved = (first - second).abs().amax(-1) > 1e-5  # (B, L)
    beside_text = codes.any(-1) & (inputs["input_ids"] != TEXT_PAD_ID)  # codes at answer-token positions
    assert beside_text.any() and (codes.any(-1) & (inputs["input_ids"] == TEXT_PAD_ID)).any()
    first_code = codes.any(-1).float().argmax(-1)  # nothing before the first code can move either way
    before = torch.arange(moved.shape[1])[None] < first_code[:, None]
    assert not moved[before].any()
    if speech_read == "always":
        assert moved[beside_text].all()
    else:  # the answer's text positions stay put; the padded ones read the changed codes
        last_text = (inputs["input_ids"] == AEOS_ID).float().argmax(-1)
        upto_text = torch.arange(moved.shape[1])[None] <= last_text[:, None]
        assert not moved[upto_text].any()
        assert moved[codes.any(-1) & (inputs["input_ids"] == TEXT_PAD_ID)].all()


def test_the_srh_is_still_teacher_forced_on_every_code():
    tester, config, model = tiny("after_text")
    inputs = tester.prepare_inputs(config)
    clean = inputs["speech_ids"].clone()
    head_previous = []
    model.speech_head.register_forward_pre_hook(lambda m, args: head_previous.append(args[1]))
    with torch.no_grad():
        out = model(**inputs)
    selected = (inputs["speech_labels"][:, 1:] != -100).any(-1)
    assert torch.equal(head_previous[-1], srh_previous_ids(clean)[selected])
    assert torch.equal(inputs["speech_ids"], clean) and torch.isfinite(out.loss)


def test_generation_reads_what_a_full_forward_reads():
    """The cached session gates each step's group as the teacher-forced forward gates the whole sequence."""
    _, config, model = tiny("after_text", seed=1)
    batch = prompts(config, (300, 175))
    out = model.generate(**batch, generation_mode="audio", max_new_tokens=9, output_logits=True,
                         **controls(config, text_end_row=3))
    k, d, steps = config.group_size, config.speech_delay, out.logits.shape[1]
    lp = batch["input_ids"].shape[1]
    speech_rows = torch.cat([torch.full((2, lp, k), config.speech_pad_token_id),
                             torch.full((2, d, k), config.speech_bos_token_id), out.speech_ids.view(2, steps - d, k)], 1)
    mask = torch.cat([batch["attention_mask"], torch.ones(2, steps, dtype=torch.long)], dim=1)
    with torch.no_grad():
        full = model(input_ids=out.sequences, speech_ids=speech_rows, attention_mask=mask,
                     position_ids=(mask.cumsum(-1) - 1).clamp(min=0), input_features=batch["input_features"],
                     feature_attention_mask=batch["feature_attention_mask"])
    assert (out.sequences[:, lp:] == TEXT_PAD_ID).any()  # the text ended and the speech went on: both regimes ran
    torch.testing.assert_close(out.logits, full.logits[:, lp - 1 : lp + steps - 1], atol=1e-4, rtol=1e-4)


def test_the_uncached_session_gates_as_the_cached_one():
    _, config, model = tiny("after_text", seed=1)
    batch = prompts(config, (300, 175))
    runs = [model.generate(**batch, generation_mode="audio", max_new_tokens=9, use_cache=use_cache,
                           **controls(config, text_end_row=3)) for use_cache in (True, False)]
    assert torch.equal(runs[0].sequences, runs[1].sequences) and torch.equal(runs[0].speech_ids, runs[1].speech_ids)


def test_a_session_stepped_with_extra_embeddings_gates_too():
    """Full duplex feeds `inputs_embeds` (text + the user's audio), so the session gates the group itself."""
    _, config, model = tiny("after_text", seed=1)
    batch = prompts(config, (300, 175))
    kw = dict(generation_mode="audio", max_new_tokens=9, **controls(config, text_end_row=3))
    want = model.generate(**batch, **kw)
    session = model.start_session(**batch, **kw)
    while not session.finished:
        session.step(extra_embeds=torch.zeros(2, config.text_config.hidden_size))
    got = session.finish()
    assert torch.equal(got.sequences, want.sequences) and torch.equal(got.speech_ids, want.speech_ids)
