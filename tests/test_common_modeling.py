"""transformers' own common model tests (`ModelTesterMixin`) on OmniDRCA, with our generation and export checks.

`ModelTesterMixin` comes from the installed transformers version's sdist (`transformers_common.import_common`), so
the suite checks the model against the conventions of the version it runs on. A common test is skipped only where
transformers' own tests of Qwen2.5-Omni, Qwen3-Omni or Voxtral skip it, with their reason; everything else must
pass. `GenerationTesterMixin` and `ExportTesterMixin` live in transformers' repository but not in its sdist: the
ones imported here are this project's (`tests/transformers_helpers/`), checking transformers' standard `generate`
arguments and `torch.export` against independent references.
"""

from __future__ import annotations

import unittest

import torch

from modeling_omnidrca import OmniDRCAForConditionalGeneration
from modeling_omnidrca.streams import IGNORE_INDEX
from omnidrca_tester import OmniDRCAModelTester, mel_frames_to_groups
from transformers_common import import_common

common = import_common("test_modeling_common")
generation_common = import_common("generation.test_utils")
ModelTesterMixin = common.ModelTesterMixin
GenerationTesterMixin = generation_common.GenerationTesterMixin

QWEN25 = "Qwen2.5-Omni skips it too: "
VOXTRAL = "Voxtral skips it too: "


class OmniDRCACommonTester:
    """Adapts `omnidrca_tester.OmniDRCAModelTester` to the attribute names transformers' mixins read."""

    # 7 rows: the eager-vs-SDPA test runs a batch of 7 and would pad a smaller one with random rows, which have no
    # audio slots for their clips. A low audio token id survives the vocabulary shrink of the resize test.
    def __init__(self, parent, batch_size: int = 7, mel_frames: int = 100, text_tokens: int = 5):
        self.parent = parent
        self.base = OmniDRCAModelTester(mel_frames=(mel_frames,) * batch_size, audio_token_id=5)
        self.batch_size = batch_size
        self.mel_frames = mel_frames
        config = self.base.get_config()
        self.audio_slots = mel_frames_to_groups(mel_frames, config.group_size)
        self.seq_length = 1 + self.audio_slots + 1 + text_tokens  # [bos, <|AUDIO|>*G, sep, text...]
        text = config.text_config
        self.hidden_size = text.hidden_size
        self.num_hidden_layers = text.num_hidden_layers
        self.num_attention_heads = text.num_attention_heads
        self.vocab_size = text.vocab_size
        self.audio_token_id = config.audio_token_id
        self.is_training = True

    def get_config(self):
        return self.base.get_config()

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        gen = torch.Generator().manual_seed(0)
        # Ids 10..89 avoid every special token of the tiny config (92..95).
        input_ids = torch.randint(10, 90, (self.batch_size, self.seq_length), generator=gen)
        input_ids[:, 0] = 1
        input_ids[:, 1 : 1 + self.audio_slots] = config.audio_token_id
        input_ids[:, 1 + self.audio_slots] = 2
        attention_mask = torch.ones_like(input_ids)
        input_features = torch.randn(self.batch_size, config.audio_config.num_mel_bins, self.mel_frames, generator=gen)
        feature_attention_mask = torch.ones(self.batch_size, self.mel_frames, dtype=torch.long)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "input_features": input_features,
            "feature_attention_mask": feature_attention_mask,
        }
        return config, inputs


class OmniDRCAModelCommonTest(ModelTesterMixin, GenerationTesterMixin, unittest.TestCase):
    # As for the Qwen2.5-Omni / Qwen3-Omni thinkers, the class with the heads is the one under test: the mixin finds
    # base models through transformers' own model-type tables, where `OmniDRCAModel` (a backbone without a loss) is
    # not listed, so it would be run through the loss tests of a head model.
    all_model_classes = (OmniDRCAForConditionalGeneration,)
    all_generative_model_classes = (OmniDRCAForConditionalGeneration,)
    # The eager-vs-SDPA comparison needs the audio that fills the prompt's audio slots.
    additional_model_inputs = ("input_features", "feature_attention_mask")
    _is_composite = True

    def setUp(self):
        self.model_tester = OmniDRCACommonTester(self)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        # The mixin adds labels only for model types in its own tables. OmniDRCA's training batch has three: text
        # targets, the speech stream with its targets (SRH), and a transcript per clip (contrastive loss); with all
        # three every trainable parameter gets a gradient, as the gradient-checkpointing tests require.
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels:
            input_ids = inputs_dict["input_ids"]
            config = self.model_tester.get_config()
            prompt = 2 + self.model_tester.audio_slots  # [bos, <|AUDIO|>*G, sep]
            gen = torch.Generator().manual_seed(1)
            labels = input_ids.clone()
            labels[:, :prompt] = IGNORE_INDEX
            speech_ids = torch.full((*input_ids.shape, config.group_size), config.speech_pad_token_id)
            answer = speech_ids[:, prompt:]
            speech_ids[:, prompt:] = torch.randint(0, config.speech_vocab_size, answer.shape, generator=gen)
            speech_labels = speech_ids.masked_fill(speech_ids == config.speech_pad_token_id, IGNORE_INDEX)
            transcripts = torch.randint(10, 90, (input_ids.shape[0], 7), generator=gen)
            device = input_ids.device
            inputs_dict.update(
                labels=labels, speech_ids=speech_ids.to(device), speech_labels=speech_labels.to(device),
                transcript_ids=transcripts.to(device),
            )
        return inputs_dict

    # ------------------------------------------------ skips that transformers' omni/audio-LM tests make too

    @unittest.skip(QWEN25 + "Cpu not yet supported because in QwenOmniThinker models")
    def test_disk_offload_bin(self):
        pass

    @unittest.skip(QWEN25 + "Disk offload bin not yet supported because in QwenOmniThinker models")
    def test_cpu_offload(self):
        pass

    @unittest.skip(QWEN25 + "Disk offload safetensors not yet supported because in QwenOmniThinker models")
    def test_disk_offload_safetensors(self):
        pass

    @unittest.skip(QWEN25 + "Correct missing keys not yet supported because in QwenOmniThinker models")
    def test_correct_missing_keys(self):
        pass

    @unittest.skip(QWEN25 + "Compile not yet supported because in QwenOmniThinker models")
    def test_sdpa_can_compile_dynamic(self):
        pass

    @unittest.skip(QWEN25 + "Sdpa dispatch not yet supported because in QwenOmniThinker models")
    def test_sdpa_can_dispatch_on_flash(self):
        pass

    @unittest.skip(QWEN25 + "QwenOmniThinker does not support output_hidden_states test")
    def test_model_outputs_equivalence(self):
        pass

    @unittest.skip(VOXTRAL + "inputs_embeds corresponding to audio tokens are replaced when input features are provided")
    def test_inputs_embeds_matches_input_ids(self):
        pass


if __name__ == "__main__":
    unittest.main()
