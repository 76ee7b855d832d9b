"""`speech_input_noise`: in training the backbone reads partly random speech codes; the SRH and targets stay clean."""

import pytest
import torch

from modeling_omnidrca import OmniDRCAConfig, OmniDRCAForConditionalGeneration
from modeling_omnidrca.speech_head_srh import swap_random_codes
from modeling_omnidrca.streams import srh_previous_ids
from omnidrca_tester import OmniDRCAModelTester


def test_swap_random_codes_keeps_specials_and_swaps_the_expected_share():
    num_codes, specials = 32, (32, 33, 34)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, num_codes, (4000, 3, 5), generator=gen)
    special = torch.rand(ids.shape, generator=gen) < 0.2
    ids[special] = torch.tensor(specials)[torch.randint(0, 3, (int(special.sum()),), generator=gen)]

    out = swap_random_codes(ids, 0.6, num_codes, generator=gen)
    assert torch.equal(out[special], ids[special])  # bos/eos/pad are never touched
    assert int(out[~special].max()) < num_codes  # codes are swapped for codes, never for specials
    # A row's rate is uniform in [0, 0.6] (mean 0.3); a swapped code lands on itself 1 time in 32.
    changed = (out != ids)[~special].float().mean().item()
    assert changed == pytest.approx(0.3 * 31 / 32, abs=0.015)
    # The rate is drawn per row: rows differ far more than a shared rate would allow (binomial sd ~0.11).
    per_row = (out != ids).flatten(1).float().sum(1) / (~special).flatten(1).sum(1).clamp(min=1)
    assert per_row.std().item() > 0.15
    assert torch.equal(swap_random_codes(ids, 0.0, num_codes), ids)


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
