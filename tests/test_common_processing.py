"""transformers' own common tests for the config, the processor and the feature extractor.

The mixins come from the installed transformers version's sdist (see `transformers_common.py`), so these tests
follow the conventions of the version they run on. A common test is skipped only where transformers skips it for
its own omni/audio models (Qwen2.5-Omni, Qwen3-Omni, Voxtral), or where it is about a modality OmniDRCA has not
(images, video), as transformers' audio-only processors' tests skip it; each skip says which.

Run: `python -m pytest -q tests/test_common_processing.py`
"""

from __future__ import annotations

import itertools
import json
import random
import shutil
import tempfile
import unittest
from pathlib import Path

import numpy as np
import soundfile as sf
from parameterized import parameterized

from modeling_omnidrca import OmniDRCAConfig
from modeling_omnidrca.feature_extraction_omnidrca import OmniDRCAFeatureExtractor
from modeling_omnidrca.processing_omnidrca import OmniDRCAProcessor
from omnidrca_tester import OmniDRCAModelTester
from transformers_common import import_common

ConfigTester = import_common("test_configuration_common").ConfigTester
processing_common = import_common("test_processing_common")
ProcessorTesterMixin = processing_common.ProcessorTesterMixin
SequenceFeatureExtractionTestMixin = import_common(
    "test_sequence_feature_extraction_common"
).SequenceFeatureExtractionTestMixin

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tiny-random-omnidrca"
SR = 16000

NO_VIDEO = (
    "OmniDRCA takes no video: like transformers' audio-only processors (no video_processor), "
    "it has nothing to test here"
)


# --------------------------------------------------------------------------------------------------- config


class OmniDRCAConfigCommonTest(unittest.TestCase):
    def setUp(self):
        # `create_and_test_config_from_pretrained_custom_kwargs` saves `model_tester.get_config()` (tiny, non-default
        # sub-configs) and reloads it with a new text vocabulary: only that field may change.
        self.model_tester = OmniDRCAModelTester()
        # Scalar fields only: `to_json_string` must echo every given key as given.
        self.config_tester = ConfigTester(
            self, config_class=OmniDRCAConfig, has_text_modality=False, group_size=3, speech_delay=1
        )

    def test_config(self):
        # Every common check, the composite one on a config whose SRH is of another family than the backbone:
        # `Qwen2Config.from_pretrained(folder)` picks a folder's qwen2 block by model type alone, so with two qwen2
        # sub-configs (the default SRH beside a Qwen2 backbone) it cannot tell `srh_config` from `text_config`.
        # transformers' own omni models avoid this with one config class per role; see the closing note of the
        # compatibility issue for this known limitation.
        base = self.model_tester.get_config().to_dict()
        srh = {**base["srh_config"], "model_type": "llama"}
        composite = ConfigTester(self, config_class=OmniDRCAConfig, has_text_modality=False,
                                 text_config=base["text_config"], srh_config=srh)
        self.config_tester.create_and_test_config_from_and_save_pretrained_composite = (
            composite.create_and_test_config_from_and_save_pretrained_composite
        )
        self.config_tester.run_common_tests()


# --------------------------------------------------------------------------------------------------- processor


def _write_local_audio(folder: Path) -> list[str]:
    """Two short clips in the formats of transformers' remote test audio (a 44.1 kHz stereo and a 16 kHz mono
    file), written locally: CI has no Hub access, and OmniDRCA reads files with soundfile."""
    rng = np.random.default_rng(0)
    paths = [folder / "glass-breaking.wav", folder / "throatclearing.wav"]
    sf.write(paths[0], (0.1 * rng.standard_normal((int(0.8 * 44100), 2))).astype(np.float32), 44100)
    sf.write(paths[1], (0.1 * rng.standard_normal(int(0.6 * SR))).astype(np.float32), SR)
    return [str(p) for p in paths]


class OmniDRCAProcessorCommonTest(ProcessorTesterMixin, unittest.TestCase):
    processor_class = OmniDRCAProcessor
    # The tiny fixture checkpoint: its trained tokenizer (stream special tokens), extractor and chat template.
    model_id = str(FIXTURE)

    @staticmethod
    def prepare_processor_dict():
        # The processor's own init kwargs (its stream layout), as the fixture saved them: the common tests build
        # processors from components with these and compare them with the saved one.
        saved = json.loads((FIXTURE / "processor_config.json").read_text())
        return {k: v for k, v in saved.items() if k not in ("auto_map", "feature_extractor", "processor_class")}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.audio_dir = Path(tempfile.mkdtemp())
        cls.local_audio = _write_local_audio(cls.audio_dir)
        # Tests that read transformers' remote audio URLs get the local clips instead.
        cls._remote_audio = processing_common.MODALITY_INPUT_DATA["audio"]
        processing_common.MODALITY_INPUT_DATA["audio"] = cls.local_audio

    @classmethod
    def tearDownClass(cls):
        processing_common.MODALITY_INPUT_DATA["audio"] = cls._remote_audio
        shutil.rmtree(cls.audio_dir, ignore_errors=True)
        super().tearDownClass()

    # transformers decorates these two with `require_librosa` because its own loader decodes the URLs with
    # librosa; OmniDRCA reads local files with soundfile, so they run here without it.
    @parameterized.expand([(1, "np"), (1, "pt"), (2, "np"), (2, "pt")])
    def test_apply_chat_template_audio(self, batch_size: int, return_tensors: str):
        self._test_apply_chat_template(
            "audio", batch_size, return_tensors, "audio_input_name", "feature_extractor", self.local_audio
        )

    def test_chat_template_audio_sampling_rate(self):
        test = ProcessorTesterMixin.test_chat_template_audio_sampling_rate
        getattr(test, "__wrapped__", test)(self)  # the body, without the librosa requirement

    def test_default_template_masks_what_assistant_turns_teach(self):
        """OmniDRCA's own template (the common test uses a dummy one): `assistant_masks` cover each assistant
        turn's text and `<|aeos|>` (what `build_assistant_streams` trains), also after audio slots are expanded."""
        processor = self.get_processor()
        clip = 0.1 * np.random.default_rng(0).standard_normal(SR).astype(np.float32)
        conversations = [
            [
                {"role": "user", "content": [{"type": "audio", "audio": clip}, {"type": "text", "text": "seven?"}]},
                {"role": "assistant", "content": "seven plus one"},
            ],
            [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello there"},
                {"role": "user", "content": "more"},
                {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
            ],
        ]
        for padding_side in ("left", "right"):
            out = processor.apply_chat_template(
                conversations, tokenize=True, return_dict=True, return_tensors="pt",
                return_assistant_tokens_mask=True, processor_kwargs={"padding_side": padding_side},
            )  # fmt: skip
            rows = zip(out.input_ids, out.assistant_masks)
            taught = [processor.tokenizer.decode(ids[mask.bool()]) for ids, mask in rows]
            self.assertEqual(taught, ["seven plus one<|aeos|>", "hello there<|aeos|>ok<|aeos|>"])
            self.assertEqual(out.input_features.shape[0], 1)

    # --- modalities OmniDRCA does not have ------------------------------------------------------------------
    # The image and video tests skip themselves ("image_processor / video_processor attribute not present"), as
    # for every audio-only processor, except these three, whose torchcodec requirement is checked first and would
    # be reported instead. They say why they don't apply.

    @unittest.skip(NO_VIDEO)
    def test_apply_chat_template_video(self, *args):
        pass

    @unittest.skip(NO_VIDEO)
    def test_apply_chat_template_decoded_video(self, *args):
        pass

    @unittest.skip(NO_VIDEO + "; Qwen2.5-Omni skips it too: librosa can't decode the audio track of a video in CI")
    def test_chat_template_audio_from_video(self):
        pass


# --------------------------------------------------------------------------------------------------- feature extractor


global_rng = random.Random()


def floats_list(shape, scale=1.0, rng=None):
    """A (shape[0], shape[1]) nested list of random floats in [0, scale), as transformers' tests make them."""
    rng = rng or global_rng
    return [[rng.random() * scale for _ in range(shape[1])] for _ in range(shape[0])]


class OmniDRCAFeatureExtractionTester:
    """Inputs for the sequence mixin, which pads and truncates (T, feature_size) feature sequences with the
    inherited `SequenceFeatureExtractor.pad`, like `WhisperFeatureExtractionTester`."""

    def __init__(
        self, parent, batch_size=7, min_seq_length=400, max_seq_length=2000, feature_size=10, hop_length=160,
        n_fft=400, padding_value=0.0, sampling_rate=4000, return_attention_mask=True,
    ):  # fmt: skip
        self.parent = parent
        self.batch_size = batch_size
        self.min_seq_length = min_seq_length
        self.max_seq_length = max_seq_length
        self.seq_length_diff = (max_seq_length - min_seq_length) // (batch_size - 1)
        self.feature_size = feature_size
        self.hop_length = hop_length
        self.n_fft = n_fft
        self.padding_value = padding_value
        self.sampling_rate = sampling_rate
        self.return_attention_mask = return_attention_mask

    def prepare_feat_extract_dict(self):
        return {
            "feature_size": self.feature_size,
            "hop_length": self.hop_length,
            "n_fft": self.n_fft,
            "padding_value": self.padding_value,
            "sampling_rate": self.sampling_rate,
            "return_attention_mask": self.return_attention_mask,
        }

    def prepare_inputs_for_common(self, equal_length=False, numpify=False):
        if equal_length:
            speech_inputs = [floats_list((self.max_seq_length, self.feature_size)) for _ in range(self.batch_size)]
        else:  # increasing lengths
            lengths = range(self.min_seq_length, self.max_seq_length, self.seq_length_diff)
            speech_inputs = [floats_list((x, self.feature_size)) for x in lengths]
        return [np.asarray(x) for x in speech_inputs] if numpify else speech_inputs


class OmniDRCAFeatureExtractionCommonTest(SequenceFeatureExtractionTestMixin, unittest.TestCase):
    feature_extraction_class = OmniDRCAFeatureExtractor

    def setUp(self):
        self.feat_extract_tester = OmniDRCAFeatureExtractionTester(self)

    def test_call(self):
        """Batched and single calls agree, from lists and arrays, as in transformers' Whisper test."""
        fe = self.feature_extraction_class(**self.feat_extract_tester.prepare_feat_extract_dict())
        speech = [floats_list((1, x))[0] for x in range(800, 1400, 200)]
        np_speech = [np.asarray(x) for x in speech]

        features = fe(np_speech, return_tensors="np").input_features
        self.assertEqual(features.ndim, 3)
        self.assertEqual(features.shape[-2], fe.feature_size)

        one = fe(speech[0], return_tensors="np").input_features
        np.testing.assert_allclose(one, fe(np_speech[0], return_tensors="np").input_features, atol=1e-3)
        for a, b in itertools.zip_longest(fe(speech, return_tensors="np").input_features, features):
            np.testing.assert_allclose(a, b, atol=1e-3)
