import math

import pytest
import torch
import torch.nn.functional as F
from transformers import DynamicCache

from modeling_omnidrca import OmniDRCAConfig, OmniDRCAForConditionalGeneration
from modeling_omnidrca.streams import IGNORE_INDEX
from omnidrca_tester import AUDIO_ID, OmniDRCAModelTester, mel_frames_to_groups


def build(k: int = 5, seed: int = 0, **overrides):
    tester = OmniDRCAModelTester(group_size=k, **overrides)
    config = tester.get_config()
    torch.manual_seed(seed)
    return tester, config, OmniDRCAForConditionalGeneration(config).eval()


@pytest.mark.parametrize("k", [1, 5])
def test_forward_backward_all_components(k):
    tester, config, model = build(k)
    model.train()
    inputs = tester.prepare_inputs(config)
    out = model(**inputs)
    for name in ("loss", "text_loss", "speech_loss", "contrastive_loss"):
        value = getattr(out, name)
        assert value is not None and torch.isfinite(value), name
        assert value.item() > 0, name
    assert out.logits.shape == (*inputs["input_ids"].shape, config.text_config.vocab_size)
    assert out.speech_logits.shape[1:] == (k, config.speech_embed_vocab_size)
    out.loss.backward()
    # Every part of the model learns from the full loss.
    for prefix in (
        "model.audio_tower.layers.0", "model.multi_modal_projector", "model.speech_embed.proj",
        "model.language_model.layers.0", "lm_head", "speech_head.ungroup", "speech_head.decoder.layers.0",
        "speech_head.lm_head", "contrastive_logit_scale",
    ):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(prefix) and p.requires_grad]
        assert grads and all(g is not None for g in grads), prefix
        assert sum(g.abs().sum().item() for g in grads) > 0, prefix
    # The codec is frozen and stays in eval mode while the rest trains.
    assert not model.speech_codec.training
    assert all(not p.requires_grad and p.grad is None for p in model.speech_codec.parameters())


def test_loss_components_absent_without_their_labels():
    tester, config, model = build()
    inputs = tester.prepare_inputs(config)
    with torch.no_grad():
        bare = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                     input_features=inputs["input_features"], feature_attention_mask=inputs["feature_attention_mask"])
        text_only = model(**{k: v for k, v in inputs.items() if k not in ("speech_labels", "transcript_ids",
                                                                          "transcript_attention_mask")})
    assert bare.loss is None and bare.text_loss is None and bare.speech_loss is None and bare.contrastive_loss is None
    assert text_only.speech_loss is None and text_only.contrastive_loss is None and text_only.speech_logits is None
    assert torch.equal(text_only.loss, text_only.text_loss)


def test_total_loss_is_weighted_sum_and_text_loss_is_shifted_ce():
    tester, config, model = build(speech_loss_weight=0.5, contrastive_weight=0.25)
    inputs = tester.prepare_inputs(config)
    with torch.no_grad():
        out = model(**inputs)
    expected = out.text_loss + 0.5 * out.speech_loss + 0.25 * out.contrastive_loss
    torch.testing.assert_close(out.loss, expected)
    # Reference next-token CE from the returned logits, written independently of the model's code.
    ref = F.cross_entropy(
        out.logits[:, :-1].reshape(-1, out.logits.shape[-1]), inputs["labels"][:, 1:].reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(out.text_loss, ref)


def test_speech_loss_matches_reference_srh_computation():
    tester, config, model = build()
    inputs = tester.prepare_inputs(config)
    with torch.no_grad():
        out = model(**inputs)
        hidden = model.model(**{k: inputs[k] for k in ("input_ids", "attention_mask", "input_features",
                                                          "feature_attention_mask", "speech_ids")}).last_hidden_state
        losses, counts = [], 0
        speech_ids, speech_labels = inputs["speech_ids"], inputs["speech_labels"]
        for b in range(speech_ids.shape[0]):
            for t in range(speech_ids.shape[1] - 1):
                target = speech_labels[b, t + 1]
                if (target == IGNORE_INDEX).all():
                    continue
                # Loop form of the SRH: previous token = last of this group, then the next group's own tokens.
                prev = torch.tensor([speech_ids[b, t, -1].item()] + speech_ids[b, t + 1, :-1].tolist())
                logits = model.speech_head(hidden[b, t][None], prev[None])[0]  # (k, Vs)
                valid = target != IGNORE_INDEX
                losses.append(F.cross_entropy(logits[valid], target[valid], reduction="sum"))
                counts += int(valid.sum())
    torch.testing.assert_close(out.speech_loss, torch.stack(losses).sum() / counts)


@pytest.mark.parametrize("k", [1, 5])
def test_backbone_sees_grouped_speech_positions(k):
    tester, config, model = build(k)
    inputs = tester.prepare_inputs(config)
    seen = []
    hook = model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["inputs_embeds"].shape), with_kwargs=True
    )
    with torch.no_grad():
        model(**inputs)
    hook.remove()
    (shape,) = seen
    n_slots = (inputs["input_ids"] == AUDIO_ID).sum(-1).tolist()
    assert n_slots == [mel_frames_to_groups(f, k) for f in tester.mel_frames]
    # Longest row: 2 prompt text tokens + its audio groups + assistant steps of its answer.
    steps = [max(t + 2, config.speech_delay + math.ceil((c + 1) / k)) for t, c in tester.answer_lengths]
    assert shape[1] == max(2 + g + s for g, s in zip(n_slots, steps))
    # 3 s of 100 Hz mel -> 75 frames at 25 Hz -> 15 LLM positions at k=5, 75 at k=1.
    assert mel_frames_to_groups(300, k) == (15 if k == 5 else 75)


def test_audio_in_padded_batch_equals_audio_alone():
    tester, config, model = build()
    inputs = tester.prepare_inputs(config)
    with torch.no_grad():
        batch = model.get_audio_features(inputs["input_features"], inputs["feature_attention_mask"])
        frames = tester.mel_frames[1]
        alone = model.get_audio_features(inputs["input_features"][1:, :, :frames])
    g = int(alone.mask.sum())
    assert int(batch.mask[1].sum()) == g
    torch.testing.assert_close(batch.pooler_output[1, :g], alone.pooler_output[0, :g], atol=1e-5, rtol=1e-5)
    assert batch.pooler_output[1, g:].abs().max() == 0


def test_pad_speech_groups_leave_the_text_lm_untouched():
    tester, config, model = build()
    inputs = tester.prepare_inputs(config, speech=False, transcripts=False)
    ids = inputs["input_ids"].clone()
    ids[ids == AUDIO_ID] = 3  # drop audio: compare a pure text position with the plain text LM
    pad = torch.full((*ids.shape, config.group_size), config.speech_pad_token_id)
    with torch.no_grad():
        with_pad = model.model(input_ids=ids, attention_mask=inputs["attention_mask"], speech_ids=pad)
        plain = model.model.language_model(input_ids=ids, attention_mask=inputs["attention_mask"])
    torch.testing.assert_close(with_pad.last_hidden_state, plain.last_hidden_state)


def test_streams_are_causal():
    """Text logits at row t and SRH logits for group t+1 must not see later speech tokens."""
    tester, config, model = build()
    inputs = tester.prepare_inputs(config, transcripts=False)
    with torch.no_grad():
        base = model(**inputs)
        changed = {**inputs, "speech_ids": inputs["speech_ids"].clone()}
        b = 0
        rows = (inputs["speech_labels"][b] != IGNORE_INDEX).any(-1).nonzero().flatten()
        t = int(rows[1])  # a row with codes; alter its last two tokens
        changed["speech_ids"][b, t, -2:] = (changed["speech_ids"][b, t, -2:] + 1) % config.speech_vocab_size
        after = model(**changed)
    torch.testing.assert_close(base.logits[b, :t], after.logits[b, :t])
    assert not torch.allclose(base.logits[b, t:], after.logits[b, t:])
    # SRH logits of group t (predicted from row t-1): the first k-2 tokens do not see the change.
    order = (inputs["speech_labels"][:, 1:] != IGNORE_INDEX).any(-1).nonzero().tolist()
    p = order.index([b, t - 1])
    k = config.group_size
    torch.testing.assert_close(base.speech_logits[p, : k - 1], after.speech_logits[p, : k - 1])
    assert not torch.allclose(base.speech_logits[p, k - 1], after.speech_logits[p, k - 1])


def test_gradient_checkpointing_runs():
    tester, config, model = build()
    model.train()
    model.activation_checkpointing_enable()
    out = model(**tester.prepare_inputs(config))
    out.loss.backward()
    assert model.model.audio_tower.layers[0].fc1.weight.grad is not None


# --- bad input gets a clear ValueError -------------------------------------------------------------


def test_error_audio_slots_do_not_match_audio():
    tester, config, model = build()
    inputs = tester.prepare_inputs(config)
    ids = inputs["input_ids"].clone()
    first_slot = (ids[0] == AUDIO_ID).nonzero()[0, 0]
    ids[0, first_slot] = 3
    with pytest.raises(ValueError, match=r"audio slots .* need"):
        model(**{**inputs, "input_ids": ids})
    with pytest.raises(ValueError, match="no `input_features`"):
        model(input_ids=inputs["input_ids"])
    with pytest.raises(ValueError, match="no `input_features`"):  # an empty cache is still a prefill
        model(input_ids=inputs["input_ids"], cache=DynamicCache(config=config.text_config), use_cache=True)


def test_error_group_size_mismatch():
    tester, config, model = build(k=5)
    other = OmniDRCAModelTester(group_size=1)  # a batch laid out for k=1
    inputs = other.prepare_inputs(other.get_config())
    with pytest.raises(ValueError, match=r"audio slots .* k=5"):
        model(**inputs)
    inputs5 = tester.prepare_inputs(config)
    speech_ids = inputs5["speech_ids"][..., :3]
    with pytest.raises(ValueError, match=r"group_size"):
        model(**{**inputs5, "speech_ids": speech_ids, "speech_labels": None})


def test_error_labels_of_wrong_shape():
    tester, config, model = build()
    inputs = tester.prepare_inputs(config)
    with pytest.raises(ValueError, match="`labels` must have the shape"):
        model(**{**inputs, "labels": inputs["labels"][:, :-1]})
    with pytest.raises(ValueError, match="`speech_labels` must have the shape"):
        model(**{**inputs, "speech_labels": inputs["speech_labels"][:, :, :2]})
    with pytest.raises(ValueError, match="need `speech_ids`"):
        model(**{**inputs, "speech_ids": None})
    with pytest.raises(ValueError, match="one transcript per clip"):
        model(**{**inputs, "transcript_ids": inputs["transcript_ids"][:1], "transcript_attention_mask": None})


def test_error_bad_audio_features():
    tester, config, model = build()
    with pytest.raises(ValueError, match="exceeds the encoder's maximum"):
        model.get_audio_features(torch.zeros(1, 80, 3001))
    with pytest.raises(ValueError, match=r"\(num_clips, 80, frames\)"):
        model.get_audio_features(torch.zeros(1, 64, 100))


def test_config_errors():
    tester = OmniDRCAModelTester()
    with pytest.raises(ValueError, match="Unknown `speech_head_type`"):
        tester.get_config().__class__(speech_head_type="vocoder")
    with pytest.raises(ValueError, match="group_size"):
        OmniDRCAConfig(group_size=0)
    with pytest.raises(ValueError, match="collides with codec codes"):
        OmniDRCAConfig(codec_config={"fsq_levels": [5, 5, 4]}, speech_eos_token_id=5)
    with pytest.raises(ValueError, match="does not match the codec's codebook of 100"):
        OmniDRCAConfig(codec_config={"fsq_levels": [5, 5, 4]}, speech_vocab_size=64)
    with pytest.raises(ValueError, match="Whisper-style"):
        OmniDRCAConfig(audio_config={"model_type": "wav2vec2"})
    with pytest.raises(ValueError, match="outside the text vocabulary"):
        OmniDRCAModelTester(audio_token_id=10_000).get_config()
