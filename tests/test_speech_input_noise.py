"""`speech_input_noise`: in training the backbone reads partly random speech codes; the SRH and targets stay clean."""

import pytest
import torch

from modeling_omnidrca import OmniDRCAConfig, OmniDRCAForConditionalGeneration
from modeling_omnidrca.speech_head_srh import OmniDRCASpeechEmbedding, swap_random_codes
from modeling_omnidrca.streams import srh_previous_ids
from omnidrca_tester import OmniDRCAModelTester


def codes_with_specials(shape, num_codes, gen):
    ids = torch.randint(0, num_codes, shape, generator=gen)
    special = torch.rand(shape, generator=gen) < 0.2
    ids[special] = torch.tensor((num_codes, num_codes + 1, num_codes + 2))[torch.randint(0, 3, (int(special.sum()),), generator=gen)]
    return ids, special


def test_swap_random_codes_keeps_specials_and_swaps_the_asked_share():
    gen = torch.Generator().manual_seed(0)
    ids, special = codes_with_specials((4000, 3, 5), 32, gen)
    out = swap_random_codes(ids, 0.25, 32, generator=gen)
    assert torch.equal(out[special], ids[special])  # bos/eos/pad are never touched
    assert int(out[~special].max()) < 32  # codes are swapped for codes, never for specials
    # A swapped code lands on itself 1 time in 32.
    assert (out != ids)[~special].float().mean().item() == pytest.approx(0.25 * 31 / 32, abs=0.01)
    assert torch.equal(swap_random_codes(ids, 0.0, 32), ids)


def test_the_embedding_draws_one_rate_per_row_up_to_the_setting():
    config = OmniDRCAModelTester(speech_input_noise=0.6).get_config()
    embed = OmniDRCASpeechEmbedding(config).train()
    read = []
    embed.embed_tokens.register_forward_hook(lambda m, args, out: read.append(args[0]))
    ids, special = codes_with_specials((4000, 3, 5), config.speech_vocab_size, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    embed(ids)
    changed = read[0] != ids
    assert not changed[special].any()
    # Rates uniform in [0, 0.6] (mean 0.3). A row's share then spreads wider than one shared rate allows: over a
    # row's ~12 codes a shared 0.3 gives sd 0.13 (binomial), uniform rates about 0.21.
    assert changed[~special].float().mean().item() == pytest.approx(0.3 * 31 / 32, abs=0.015)
    per_row = changed.flatten(1).float().sum(1) / (~special).flatten(1).sum(1).clamp(min=1)
    assert per_row.std().item() > 0.17
    embed.eval()
    embed(ids)
    assert torch.equal(read[1], ids)  # never at evaluation


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_bad_noise_is_refused(value):
    with pytest.raises(ValueError, match="speech_input_noise"):
        OmniDRCAConfig(speech_input_noise=value)


def test_the_diffusion_head_refuses_code_noise():
    with pytest.raises(ValueError, match="continuous latents"):
        OmniDRCAModelTester(speech_head_type="diffusion", speech_input_noise=0.2).get_config()


def test_only_the_backbone_reads_noised_codes_and_only_in_training():
    tester = OmniDRCAModelTester(speech_input_noise=0.9)
    config = tester.get_config()
    torch.manual_seed(0)
    model = OmniDRCAForConditionalGeneration(config)
    inputs = tester.prepare_inputs(config)
    clean = inputs["speech_ids"].clone()
    read, head_previous = [], []
    model.model.speech_embed.embed_tokens.register_forward_hook(lambda m, args, out: read.append(args[0]))
    model.speech_head.register_forward_pre_hook(lambda m, args: head_previous.append(args[1]))

    model.eval()
    with torch.no_grad():
        first, second = model(**inputs), model(**inputs)
    assert torch.equal(read[0], clean) and torch.equal(first.logits, second.logits)

    model.train()
    torch.manual_seed(1)
    noised = model(**inputs)
    backbone_read, srh_read = read[-1], head_previous[-1]
    codes = clean < config.speech_vocab_size
    assert torch.equal(backbone_read[~codes], clean[~codes])  # pads and eos as given
    assert (backbone_read[codes] != clean[codes]).any()
    assert torch.equal(inputs["speech_ids"], clean)  # the caller's tensor is not modified
    # The SRH is teacher-forced on the clean stream: its previous ids are those of the given speech_ids.
    selected = (inputs["speech_labels"][:, 1:] != -100).any(-1)
    assert torch.equal(srh_read, srh_previous_ids(clean)[selected])
    assert not torch.allclose(noised.logits, first.logits, atol=1e-4)
