"""The processor: chat template with audio, slot expansion, the training builder, decode helpers, Hub round trip."""

import copy
import os
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from modeling_omnidrca import OmniDRCAForConditionalGeneration, build_assistant_streams
from modeling_omnidrca.feature_extraction_omnidrca import OmniDRCAFeatureExtractor
from modeling_omnidrca.processing_omnidrca import OmniDRCAProcessor
from modeling_omnidrca.tokenization import stream_token_ids, train_text_tokenizer
from omnidrca_tester import OmniDRCAModelTester
from remote_code import run_without_package

CORPUS = ["what is seven plus twelve", "seven plus twelve is nineteen", "the capital of france is paris",
          "You are a helpful voice assistant. Answer briefly.", "repeat after me"] * 20
SR = 16000


@pytest.fixture(scope="module")
def tokenizer():
    return train_text_tokenizer(CORPUS, vocab_size=320)


def make_processor(tokenizer, k=5, delay=2):
    return OmniDRCAProcessor(OmniDRCAFeatureExtractor(), tokenizer, group_size=k, speech_delay=delay,
                             speech_vocab_size=32)


def make_model(tokenizer, k=5):
    ids = stream_token_ids(tokenizer)
    text = dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    config = OmniDRCAModelTester(group_size=k, text_config=text, **ids).get_config()
    torch.manual_seed(0)
    return OmniDRCAForConditionalGeneration(config).eval()


def tone(seconds, sr=SR, freq=220.0):
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_chat_template_renders_chatml_with_default_system_prompt(tokenizer):
    proc = make_processor(tokenizer)
    conversation = [
        {"role": "user", "content": [{"type": "audio", "audio": tone(1.0)}, {"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": [{"type": "audio", "audio": tone(1.0)}]},
    ]
    expected = (
        "<|im_start|>system\nYou are a helpful voice assistant. Answer briefly.<|im_end|>\n"
        "<|im_start|>user\n<|audio_bos|><|AUDIO|><|audio_eos|>hi<|im_end|>\n"
        "<|im_start|>assistant\n<|abos|>hello<|aeos|><|im_end|>\n"
        "<|im_start|>user\n<|audio_bos|><|AUDIO|><|audio_eos|><|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert proc.apply_chat_template(conversation, add_generation_prompt=True) == expected
    with_system = [{"role": "system", "content": "Transcribe."}, *conversation[2:]]
    assert proc.apply_chat_template(with_system).startswith("<|im_start|>system\nTranscribe.<|im_end|>\n")


@pytest.mark.parametrize("k", [1, 5])
def test_audio_slots_expand_to_grouped_length_and_feed_the_model(tokenizer, k):
    proc, model = make_processor(tokenizer, k=k), make_model(tokenizer, k=k)
    conversation = [{"role": "user", "content": [{"type": "audio", "audio": tone(2.0)}]}]
    inputs = proc.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                      return_tensors="pt")
    assert set(inputs) == {"input_ids", "attention_mask", "input_features", "feature_attention_mask"}
    # 2 s -> 200 mel frames -> 100 at 50 Hz -> 50 at 25 Hz -> 50 / k groups.
    assert int((inputs["input_ids"] == proc.audio_token_id).sum()) == 50 // k
    assert inputs["input_features"].shape == (1, 80, 200)
    with torch.no_grad():
        out = model(**inputs)
        generated = model.generate(**inputs, generation_mode="audio", max_new_tokens=3)
    assert out.logits.shape[1] == inputs["input_ids"].shape[1]
    prompt_length = inputs["input_ids"].shape[1]
    assert torch.equal(generated.sequences[:, :prompt_length], inputs["input_ids"])
    assert generated.sequences[0, prompt_length] == proc.tokenizer.convert_tokens_to_ids("<|abos|>")
    assert generated.speech_ids.shape == (1, (3 - 2) * k)


def test_batched_conversations_file_and_array_and_rates(tokenizer, tmp_path):
    proc = make_processor(tokenizer)
    wave_8k = tone(1.5, sr=8000)
    sf.write(tmp_path / "q.wav", wave_8k, 8000, subtype="FLOAT")  # lossless, so file == array
    batch = [
        [{"role": "user", "content": [{"type": "audio", "path": str(tmp_path / "q.wav")}]}],
        [{"role": "user", "content": [{"type": "audio", "audio": wave_8k, "sampling_rate": 8000}]}],
        [{"role": "user", "content": [{"type": "audio", "audio": tone(3.0)}, {"type": "text", "text": "hi"}]}],
    ]
    out = proc.apply_chat_template(batch, add_generation_prompt=True, tokenize=True, return_dict=True,
                                   return_tensors="pt")
    slots = (out["input_ids"] == proc.audio_token_id).sum(-1).tolist()
    assert slots == [150 // 4 // 5 + (1 if 150 // 4 % 5 else 0)] * 2 + [15]  # 1.5 s -> 37 frames at 25 Hz -> 8
    # The 8 kHz file and the same samples given as an array produce the same features.
    torch.testing.assert_close(out["input_features"][0], out["input_features"][1])
    # Left padding for generation: every row ends with the assistant header.
    assert out["attention_mask"][:, -1].tolist() == [1, 1, 1]
    assert out["attention_mask"][0, 0] == 0


def test_a_right_padding_tokenizer_still_gives_left_padded_prompts(tokenizer, tmp_path):
    """SmolLM2's tokenizer pads right, and the SmolLM2 demo shipped it so: a batch of two questions was refused."""
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.padding_side = "right"
    make_processor(tokenizer).save_pretrained(tmp_path)  # saves the tokenizer as it was handed over
    for proc in (make_processor(tokenizer), OmniDRCAProcessor.from_pretrained(tmp_path)):
        batch = [[{"role": "user", "content": [{"type": "text", "text": text}]}] for text in ("hi", "what is seven plus twelve")]
        out = proc.apply_chat_template(batch, add_generation_prompt=True, tokenize=True, return_dict=True,
                                       return_tensors="pt")
        assert out["attention_mask"][:, -1].tolist() == [1, 1] and out["attention_mask"][0, 0] == 0
        generated = make_model(proc.tokenizer).generate(**out, generation_mode="text", max_new_tokens=2)
        assert generated.sequences.shape[0] == 2
    right = proc.apply_chat_template(batch, add_generation_prompt=True, tokenize=True, return_dict=True,
                                     return_tensors="pt", padding_side="right")  # a call's own choice still wins
    assert right["attention_mask"][0, -1] == 0


def test_settings_given_to_from_pretrained_stay_out_of_the_tokenizer_config(tokenizer, tmp_path):
    """ProcessorMixin passes `speech_read=...` to the tokenizer as well; the SmolLM2 demo shipped it in its
    tokenizer_config.json, where it came back on every load. The setting lives in processor_config.json only."""
    import json

    make_processor(tokenizer).save_pretrained(tmp_path / "a")
    loaded = OmniDRCAProcessor.from_pretrained(tmp_path / "a", speech_read="after_text", speech_delay=3)
    assert (loaded.speech_read, loaded.speech_delay) == ("after_text", 3)
    loaded.save_pretrained(tmp_path / "b")
    assert not {"speech_read", "speech_delay"} & set(json.loads((tmp_path / "b" / "tokenizer_config.json").read_text()))
    processor_config = json.loads((tmp_path / "b" / "processor_config.json").read_text())
    assert (processor_config["speech_read"], processor_config["speech_delay"]) == ("after_text", 3)
    # A folder saved before the fix, with the settings in its tokenizer config, is cleaned on the next save.
    leaked = json.loads((tmp_path / "b" / "tokenizer_config.json").read_text()) | {"speech_read": "after_text"}
    (tmp_path / "b" / "tokenizer_config.json").write_text(json.dumps(leaked))
    OmniDRCAProcessor.from_pretrained(tmp_path / "b").save_pretrained(tmp_path / "c")
    assert "speech_read" not in json.loads((tmp_path / "c" / "tokenizer_config.json").read_text())
    assert OmniDRCAProcessor.from_pretrained(tmp_path / "c").speech_read == "after_text"


def test_bad_audio_items_raise_clear_errors(tokenizer):
    proc = make_processor(tokenizer)
    with pytest.raises(ValueError, match="placeholder"):
        proc(text="<|AUDIO|> and <|AUDIO|>", audio=[tone(1.0)])
    with pytest.raises(ValueError, match="needs its audio"):
        proc.apply_chat_template([{"role": "user", "content": [{"type": "audio"}]}], tokenize=True)
    with pytest.raises(ValueError, match="URLs are not fetched"):
        proc.apply_chat_template([{"role": "user", "content": [{"type": "audio", "url": "https://x/y.wav"}]}],
                                 tokenize=True)
    with pytest.raises(ValueError, match="shorter than one 400-sample"):  # the extractor's own check
        proc(text="<|AUDIO|>", audio=[tone(0.02)])
    with pytest.raises(ValueError, match="too short"):  # 28 ms: 2 mel frames, no 25 Hz frame
        proc(text="<|AUDIO|>", audio=[tone(0.028)])


def test_training_batch_mixes_tasks_and_matches_the_stream_layout(tokenizer):
    proc, model = make_processor(tokenizer), make_model(tokenizer)
    s2s = {"messages": [{"role": "user", "content": [{"type": "audio", "audio": tone(2.0)}]}],
           "answer_text": "seven plus twelve is nineteen", "answer_codes": list(range(23)),
           "transcripts": ["what is seven plus twelve"]}
    s2t = {"messages": [{"role": "user", "content": [{"type": "audio", "audio": tone(1.0, freq=330)}]}],
           "answer_text": "paris", "answer_codes": None, "transcripts": ["the capital of france"]}
    t2s = {"messages": [{"role": "user", "content": "repeat after me: nineteen"}], "answer_text": "nineteen",
           "answer_codes": [4, 5, 6]}
    batch = proc.build_training_batch([s2s, s2t, t2s])
    assert batch["input_features"].shape[0] == 2 and batch["transcript_ids"].shape[0] == 2

    # Row 0, rebuilt independently: the prompt tokens, then the parallel streams of the answer.
    prompt = proc.apply_chat_template(s2s["messages"], add_generation_prompt=True).replace("<|AUDIO|>", "<|AUDIO|>" * 10)
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer = build_assistant_streams(tokenizer(s2s["answer_text"], add_special_tokens=False)["input_ids"],
                                     s2s["answer_codes"], proc.stream_config)
    n, s = len(prompt_ids), answer.input_ids.shape[0]
    assert batch["input_ids"][0, :n].tolist() == prompt_ids
    assert torch.equal(batch["input_ids"][0, n:n + s], answer.input_ids)
    assert torch.equal(batch["speech_ids"][0, n:n + s], answer.speech_ids)
    assert torch.equal(batch["speech_labels"][0, n:n + s], answer.speech_labels)
    assert (batch["labels"][0, :n] == -100).all() and (batch["speech_ids"][0, :n] == proc.speech_pad_token_id).all()
    # Right padding for training; the text-only answer has a silent speech stream.
    assert batch["attention_mask"][0].sum() == n + s and batch["attention_mask"][:, 0].tolist() == [1, 1, 1]
    assert (batch["speech_labels"][1] == -100).all()

    out = model(**batch)
    assert all(torch.isfinite(x) and x > 0 for x in (out.text_loss, out.speech_loss, out.contrastive_loss))
    # Without a transcript for every clip there is no contrastive term.
    assert "transcript_ids" not in proc.build_training_batch([s2s, {**s2t, "transcripts": None}])
    with pytest.raises(ValueError, match="no examples"):
        proc.build_training_batch([])
    with pytest.raises(ValueError, match="answer_text"):
        proc.build_training_batch([{"messages": s2s["messages"]}])


def test_post_process_text_and_audio(tokenizer):
    proc = make_processor(tokenizer)
    cfg = proc.stream_config
    prompt = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    answer = tokenizer("seven plus twelve is nineteen", add_special_tokens=False)["input_ids"]
    row = prompt + [cfg.assistant_bos_token_id] + answer + [cfg.assistant_eos_token_id, cfg.text_pad_token_id]
    padded = [tokenizer.pad_token_id] * 3 + prompt + [cfg.assistant_bos_token_id] + answer[:2]
    sequences = torch.tensor([row, padded[: len(row)] + [tokenizer.pad_token_id] * (len(row) - len(padded))])
    texts = proc.post_process_multimodal_output(SimpleNamespace(sequences=sequences), generation_mode="text")
    assert texts[0] == "seven plus twelve is nineteen"
    assert texts[1] == tokenizer.decode(answer[:2])

    waves = proc.post_process_multimodal_output(
        SimpleNamespace(waveform=torch.ones(2, 100), waveform_lengths=torch.tensor([100, 40])), generation_mode="audio")
    assert [w.shape for w in waves] == [(100,), (40,)] and waves[0].dtype == np.float32
    with pytest.raises(ValueError, match="codec"):
        proc.post_process_multimodal_output(SimpleNamespace(speech_ids=torch.zeros(1, 5)), generation_mode="audio")
    with pytest.raises(ValueError, match="'text' or 'audio'"):
        proc.post_process_multimodal_output(sequences, generation_mode="image")
    # Speech ids of a generated stream: bos/pad dropped, cut at eos.
    s = [cfg.speech_bos_token_id] * 5 + [3, 4, 5, cfg.speech_eos_token_id, cfg.speech_pad_token_id, 7]
    assert proc.speech_codes(torch.tensor(s)) == [3, 4, 5]


def test_model_compatibility_check(tokenizer):
    proc, model = make_processor(tokenizer), make_model(tokenizer)
    proc.check_model_compatibility(model.config)
    with pytest.raises(ValueError, match="group_size: processor 1 vs model 5"):
        make_processor(tokenizer, k=1).check_model_compatibility(model.config)


REMOTE = textwrap.dedent(
    """
    import sys, numpy as np, torch
    from safetensors.torch import save_file
    from transformers import AutoFeatureExtractor, AutoProcessor

    folder = sys.argv[1]
    proc = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    fe = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
    assert type(proc).__name__ == "OmniDRCAProcessor" and type(fe).__name__ == "OmniDRCAFeatureExtractor"
    wave = (0.3 * np.sin(2 * np.pi * 220 * np.arange(32000) / 16000)).astype(np.float32)
    conv = [{"role": "user", "content": [{"type": "audio", "audio": wave}]}]
    out = proc.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True,
                                   return_tensors="pt")
    save_file({k: v.contiguous() for k, v in out.items()}, "out.safetensors")
    """
)


def test_processor_roundtrip_with_trust_remote_code(tokenizer, tmp_path):
    proc = make_processor(tokenizer, k=5, delay=3)
    proc.save_pretrained(tmp_path / "proc")
    files = os.listdir(tmp_path / "proc")
    assert {"processing_omnidrca.py", "feature_extraction_omnidrca.py", "tokenizer.json"} <= set(files)
    conv = [{"role": "user", "content": [{"type": "audio", "audio": tone(2.0)}]}]
    expected = proc.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=True,
                                        return_tensors="pt")
    # In-process reload keeps the stream settings.
    reloaded = OmniDRCAProcessor.from_pretrained(tmp_path / "proc")
    assert (reloaded.group_size, reloaded.speech_delay, reloaded.speech_vocab_size) == (5, 3, 32)
    run_without_package(REMOTE, [tmp_path / "proc"], tmp_path)
    out = load_file(tmp_path / "out.safetensors")
    for key in expected:
        torch.testing.assert_close(out[key], expected[key].to(out[key].dtype))
