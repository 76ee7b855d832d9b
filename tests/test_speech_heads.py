"""Speech heads are units found through a registry: a new head is one class + one registry entry."""

import pytest
import torch
from torch import nn

from modeling_omnidrca import OmniDRCAForConditionalGeneration
from modeling_omnidrca.diffusion_head import OmniDRCADiffusionHead
from modeling_omnidrca.speech_head_srh import OmniDRCASpeechEmbedding, OmniDRCASpeechRefinedHead
from modeling_omnidrca.speech_heads import (
    SPEECH_HEAD_REGISTRY,
    SpeechGroup,
    SpeechHeadLoss,
    register_speech_head,
    speech_head_class,
)
from omnidrca_tester import OmniDRCAModelTester
from test_generation import prompts


class SilenceGeneration:
    """Per-generation state of the silence head: every active row gets k copies of the silent code."""

    latent_dim = None
    snap_to_codebook = False

    def __init__(self, model, device):
        self.model, self.device = model, device
        self.k, self.pad = model.config.group_size, model.config.speech_pad_token_id

    def next_group(self, hidden, speech_history, latent_history, active) -> SpeechGroup:
        group = torch.full((hidden.shape[0], self.k), self.pad, dtype=torch.long, device=self.device)
        group[active] = self.model.speech_head.silent_code
        return SpeechGroup(group)

    def decode(self, speech_ids, speech_latents, lengths):
        return self.model._decode_waveform(speech_ids, lengths)


class SilenceHead(nn.Module):
    """A trivial speech head: always emits the same code, learns nothing."""

    embedding_class = OmniDRCASpeechEmbedding  # reuse the discrete group embedding
    continuous = False

    def __init__(self, config):
        super().__init__()
        self.silent_code = 0
        self.scale = nn.Parameter(torch.zeros(()))

    def loss(self, hidden, speech_ids, speech_labels, speech_latents=None, embed=None) -> SpeechHeadLoss:
        return SpeechHeadLoss(hidden.sum() * 0.0 + self.scale)

    def start_generation(self, model, settings, device):
        return SilenceGeneration(model, device)


@pytest.fixture
def silence_registered():
    register_speech_head("silence")(SilenceHead)
    yield
    SPEECH_HEAD_REGISTRY.pop("silence")


def test_builtin_heads_are_registered():
    assert speech_head_class("srh") is OmniDRCASpeechRefinedHead
    assert speech_head_class("diffusion") is OmniDRCADiffusionHead
    with pytest.raises(ValueError, match="not registered: expected one of"):
        speech_head_class("nope")


def test_a_registered_head_generates_and_trains(silence_registered):
    config = OmniDRCAModelTester().get_config()
    config.speech_head_type = "silence"
    torch.manual_seed(0)
    model = OmniDRCAForConditionalGeneration(config).eval()
    assert isinstance(model.speech_head, SilenceHead)
    out = model.generate(**prompts(config), generation_mode="audio", max_new_tokens=6)
    k, delay = config.group_size, config.speech_delay
    assert out.speech_ids.shape == (1, (6 - delay) * k) and set(out.speech_ids.flatten().tolist()) == {0}
    assert out.waveform.shape == (1, (6 - delay) * k * model.speech_codec.config.samples_per_code)
    # training: the head's loss is the speech term of the model's loss
    ids = torch.full((1, 4), 3)
    speech = torch.full((1, 4, k), config.speech_pad_token_id)
    labels = torch.full((1, 4, k), 0)
    loss = model(input_ids=ids, speech_ids=speech, speech_labels=labels).speech_loss
    assert float(loss.detach()) == 0.0 and loss.requires_grad
