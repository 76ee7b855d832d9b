"""Parallel text/speech generation: stream layout, stop conditions, KV caches, batching, streaming, pipeline."""

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import AutoModel, AutoProcessor, TextIteratorStreamer
from transformers.generation.logits_process import LogitsProcessor

from modeling_omnidrca import OmniDRCAForConditionalGeneration, OmniDRCAStreamer
from modeling_omnidrca.generation_omnidrca import receptive_radius_codes
from modeling_omnidrca.streams import srh_previous_ids
from omnidrca_tester import ABOS_ID, AEOS_ID, AUDIO_ID, TEXT_PAD_ID, OmniDRCAModelTester, mel_frames_to_groups
from remote_code import run_without_package

FIXTURE = Path(__file__).parent / "fixtures" / "tiny-random-omnidrca"


class ForceAt(LogitsProcessor):
    """Test control of a stream: `token` is banned until the history reaches `length`, then forced."""

    def __init__(self, token: int, length: int | None):
        self.token, self.length = token, length

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        if self.length is None or input_ids.shape[1] < self.length:
            scores[:, self.token] = -float("inf")
        elif input_ids.shape[1] == self.length:
            scores[:] = -float("inf")
            scores[:, self.token] = 0.0
        return scores


def build(k=5, delay=2, seed=0):
    tester = OmniDRCAModelTester(group_size=k, speech_delay=delay)
    config = tester.get_config()
    torch.manual_seed(seed)
    return config, OmniDRCAForConditionalGeneration(config).eval()


def prompts(config, frames=(300,), seed=0):
    """Left-padded [bos, <|AUDIO|>*G, sep] prompts with random features, as the processor lays them out."""
    gen = torch.Generator().manual_seed(seed)
    rows = [[1] + [AUDIO_ID] * mel_frames_to_groups(f, config.group_size) + [2] for f in frames]
    length = max(map(len, rows))
    ids = torch.tensor([[0] * (length - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (length - len(r)) + [1] * len(r) for r in rows])
    feats = torch.randn(len(frames), 80, max(frames), generator=gen)
    feat_mask = torch.stack([(torch.arange(max(frames)) < f).long() for f in frames])
    return dict(input_ids=ids, attention_mask=mask, input_features=feats, feature_attention_mask=feat_mask)


def controls(config, text_end_row=None, speech_codes=None):
    """Processors that end the text at answer row `text_end_row` and the speech after `speech_codes` codes
    (None: that stream never ends), whatever the random weights prefer."""
    return dict(
        logits_processor=[ForceAt(AEOS_ID, None if text_end_row is None else prompt_len + text_end_row)],
        speech_logits_processor=[ForceAt(
            config.speech_eos_token_id,
            None if speech_codes is None else config.speech_delay * config.group_size + speech_codes,
        )],
    )


prompt_len = 1 + mel_frames_to_groups(300, 5) + 1  # the default one-clip prompt at k=5


def answer_rows(out, inputs):
    return out.sequences[:, inputs["input_ids"].shape[1]:]


# --- the stream layout and stop conditions ---------------------------------------------------------


def test_text_ends_first_then_speech_runs_to_its_eos():
    config, model = build()
    inputs = prompts(config)
    out = model.generate(**inputs, generation_mode="audio", max_new_tokens=50, **controls(config, 3, 23))
    text = answer_rows(out, inputs)[0].tolist()
    # rows: <abos> t1 t2 <aeos> then text pad while speech runs; 23 codes + eos = 24 tokens = 5 groups after d=2.
    assert text[0] == ABOS_ID and text[3] == AEOS_ID and set(text[4:]) == {TEXT_PAD_ID}
    assert len(text) == 2 + 5
    assert out.speech_lengths.tolist() == [23]
    speech = out.speech_ids[0].tolist()
    assert speech[23] == config.speech_eos_token_id and set(speech[24:]) == {config.speech_pad_token_id}
    assert all(0 <= c < config.speech_vocab_size for c in speech[:23])
    assert out.waveform.shape == (1, 23 * 640) and out.waveform_lengths.tolist() == [23 * 640]


def test_speech_ends_first_then_text_runs_to_its_aeos():
    config, model = build()
    inputs = prompts(config)
    out = model.generate(**inputs, generation_mode="audio", max_new_tokens=50, **controls(config, 9, 4))
    text = answer_rows(out, inputs)[0].tolist()
    assert len(text) == 10 and text[9] == AEOS_ID and AEOS_ID not in text[:9]
    assert out.speech_lengths.tolist() == [4]
    speech = out.speech_ids[0].tolist()
    # after the eos group every group is pad: the speech stream stays silent while text finishes
    assert speech[4] == config.speech_eos_token_id and set(speech[5:]) == {config.speech_pad_token_id}
    assert len(speech) == (10 - config.speech_delay) * 5


@pytest.mark.parametrize("k", [1, 5])
def test_max_new_tokens_stops_both_streams(k):
    config, model = build(k=k)
    inputs = prompts(config)
    out = model.generate(**inputs, generation_mode="audio", max_new_tokens=7, **controls(config))
    assert answer_rows(out, inputs).shape[1] == 7
    assert out.speech_ids.shape == (1, (7 - 2) * k) and out.speech_lengths.tolist() == [(7 - 2) * k]
    assert out.waveform_lengths.tolist() == [(7 - 2) * k * 640]


def test_text_mode_never_runs_the_speech_head():
    config, model = build()
    calls = []
    model.speech_head.decoder.register_forward_hook(lambda *args: calls.append(1))
    out = model.generate(**prompts(config), generation_mode="text", max_new_tokens=6, **controls(config, 5))
    assert calls == [] and out.speech_ids is None and out.waveform is None
    # audio mode runs the SRH k times per generated group: rows d..S-1
    model.generate(**prompts(config), generation_mode="audio", max_new_tokens=6, **controls(config, 5))
    assert len(calls) == (6 - config.speech_delay) * config.group_size


def test_return_waveform_false_skips_the_codec():
    config, model = build()
    calls = []
    model.speech_codec.register_forward_pre_hook(lambda *args: calls.append(1))
    model.speech_codec.decoder.register_forward_hook(lambda *args: calls.append(1))
    out = model.generate(**prompts(config), generation_mode="audio", max_new_tokens=5, return_waveform=False)
    assert calls == [] and out.waveform is None and out.speech_ids is not None


# --- determinism, batching, KV cache -------------------------------------------------------------------


def test_greedy_is_deterministic_and_seeded_sampling_reproduces():
    config, model = build()
    inputs = prompts(config)
    kw = dict(generation_mode="audio", max_new_tokens=8, **controls(config))
    a, b = model.generate(**inputs, **kw), model.generate(**inputs, **kw)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.speech_ids, b.speech_ids)
    sampled = [model.generate(**inputs, do_sample=True, temperature=1.5, seed=s, **kw) for s in (3, 3, 4)]
    assert torch.equal(sampled[0].speech_ids, sampled[1].speech_ids)
    assert torch.equal(sampled[0].sequences, sampled[1].sequences)
    assert not torch.equal(sampled[0].speech_ids, sampled[2].speech_ids)
    # each stream samples with its own settings: speech sampling leaves a text-only answer greedy ...
    text_kw = dict(generation_mode="text", max_new_tokens=8, **controls(config))
    assert torch.equal(model.generate(**inputs, speech_do_sample=True, speech_temperature=2.0, seed=3, **text_kw).sequences,
                       model.generate(**inputs, **text_kw).sequences)
    # ... and changes the speech of a greedy-text answer
    assert not torch.equal(model.generate(**inputs, speech_do_sample=True, speech_temperature=2.0, seed=3, **kw).speech_ids,
                           a.speech_ids)
    generator = torch.Generator().manual_seed(3)
    assert torch.equal(model.generate(**inputs, do_sample=True, temperature=1.5, generator=generator, **kw).speech_ids,
                       sampled[0].speech_ids)


@pytest.mark.parametrize("k", [1, 5])
def test_left_padded_batch_equals_each_row_alone(k):
    config, model = build(k=k)
    frames = (300, 175)
    batch = prompts(config, frames)
    kw = dict(generation_mode="audio", max_new_tokens=12)
    together = model.generate(**batch, **kw)
    for i, f in enumerate(frames):
        keep = batch["attention_mask"][i].bool()
        alone_inputs = dict(
            input_ids=batch["input_ids"][i : i + 1, keep], input_features=batch["input_features"][i : i + 1, :, :f]
        )
        alone = model.generate(**alone_inputs, **kw)
        steps = alone.sequences.shape[1] - alone_inputs["input_ids"].shape[1]
        row = together.sequences[i, batch["input_ids"].shape[1]:]
        assert torch.equal(row[:steps], alone.sequences[0, alone_inputs["input_ids"].shape[1]:])
        n = int(alone.speech_lengths[0])
        assert int(together.speech_lengths[i]) == n
        assert torch.equal(together.speech_ids[i, :n], alone.speech_ids[0, :n])
        samples = int(alone.waveform_lengths[0])
        assert int(together.waveform_lengths[i]) == samples
        torch.testing.assert_close(together.waveform[i, :samples], alone.waveform[0, :samples], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("k", [1, 5])
def test_kv_cached_decoding_equals_the_uncached_forward(k):
    """Logits of every generated step equal one full teacher-forced forward over the produced streams."""
    config, model = build(k=k)
    batch = prompts(config, (300, 175))
    out = model.generate(**batch, generation_mode="audio", max_new_tokens=9, output_logits=True, **controls(config))
    k, d, steps = config.group_size, config.speech_delay, out.logits.shape[1]
    lp = batch["input_ids"].shape[1]
    # Rebuild the full input: prompt rows carry pad groups, the answer rows bos (delay) then the codes.
    speech_rows = torch.cat([
        torch.full((2, lp, k), config.speech_pad_token_id),
        torch.full((2, d, k), config.speech_bos_token_id),
        out.speech_ids.view(2, steps - d, k),
    ], dim=1)  # (B, Lp + S, k)
    mask = torch.cat([batch["attention_mask"], torch.ones(2, steps, dtype=torch.long)], dim=1)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        full = model(input_ids=out.sequences, speech_ids=speech_rows, attention_mask=mask, position_ids=position_ids,
                     input_features=batch["input_features"], feature_attention_mask=batch["feature_attention_mask"],
                     output_hidden_states=True)
        hidden = full.hidden_states[-1]  # (B, Lp + S, D)
        # Row r of the answer is predicted by position lp + r - 1.
        torch.testing.assert_close(out.logits, full.logits[:, lp - 1 : lp + steps - 1], atol=1e-4, rtol=1e-4)
        previous = srh_previous_ids(speech_rows)[:, lp - 1 : lp + steps - 1]  # (B, S, k)
        srh = model.speech_head(hidden[:, lp - 1 : lp + steps - 1].flatten(0, 1), previous.flatten(0, 1))
    srh = srh.view(2, steps, k, -1)
    assert torch.isnan(out.speech_logits[:, :d]).all()  # the delay's bos groups are forced
    torch.testing.assert_close(out.speech_logits[:, d:], srh[:, d:], atol=1e-4, rtol=1e-4)


# --- streaming --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_pair():
    processor = AutoProcessor.from_pretrained(FIXTURE, trust_remote_code=True)
    model = AutoModel.from_pretrained(FIXTURE, trust_remote_code=True).eval()
    return processor, model


def question(tmp_path, seconds=2.0):
    t = np.arange(int(seconds * 16000)) / 16000
    path = tmp_path / "question.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32), 16000)
    return [{"role": "user", "content": [{"type": "audio", "path": str(path)}]}]


def chat_inputs(processor, conversation):
    return processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                         return_tensors="pt")


@pytest.mark.parametrize("chunk_steps", [1, 3])
def test_generate_stream_yields_what_generate_returns(fixture_pair, tmp_path, chunk_steps):
    processor, model = fixture_pair
    inputs = chat_inputs(processor, question(tmp_path))
    out = model.generate(**inputs, generation_mode="audio", max_new_tokens=30)
    pieces = list(model.generate_stream(processor, chunk_steps=chunk_steps, **inputs, generation_mode="audio",
                                        max_new_tokens=30))
    (text,) = processor.post_process_multimodal_output(out, generation_mode="text")
    assert "".join(p.text for p in pieces) == text and text
    chunks = [p.audio for p in pieces if p.audio is not None]
    codes = int(out.speech_lengths[0])
    assert codes > 0
    # every chunk but the last holds exactly chunk_steps groups of k codes
    assert all(c.shape[0] == chunk_steps * 5 * 640 for c in chunks[:-1])
    # the joined chunks are the full decode (the decode window covers the codec's receptive field)
    np.testing.assert_allclose(np.concatenate(chunks), out.waveform[0, : codes * 640].numpy(), atol=1e-5)


def test_many_streams_decoded_together_equal_each_decoded_alone(fixture_pair):
    from modeling_omnidrca.streaming_omnidrca import IncrementalSpeechDecoder, decode_together

    codec = fixture_pair[1].speech_codec
    vocab = int(np.prod(codec.config.fsq_levels))
    streams = [torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(n)).tolist() for n in (37, 52, 52)]
    alone = [IncrementalSpeechDecoder(codec, 10) for _ in streams]
    together = [IncrementalSpeechDecoder(codec, 10) for _ in streams]
    want, got = [[] for _ in streams], [[] for _ in streams]
    for start in range(0, 52, 5):  # 5 codes a step, as a server's rows grow together
        for i, codes in enumerate(streams):
            want[i] += alone[i].push(codes[start : start + 5])
            assert together[i].push(codes[start : start + 5], decode=False) == []
        for i, chunks in enumerate(decode_together(together)):
            got[i] += chunks
    for i in range(len(streams)):
        assert len(got[i]) == len(want[i]) > 0 and sum(d.ready() for d in together) == 0
        np.testing.assert_allclose(np.concatenate(got[i] + [together[i].flush()]),
                                   np.concatenate(want[i] + [alone[i].flush()]), atol=1e-5)


def test_generate_stream_runs_without_autograd(fixture_pair, tmp_path):
    processor, model = fixture_pair
    inputs = chat_inputs(processor, question(tmp_path))
    grad_modes = []
    hook = model.model.language_model.register_forward_hook(lambda *_: grad_modes.append(torch.is_grad_enabled()))
    try:
        assert torch.is_grad_enabled()  # the caller's default: the stream must turn it off itself, like generate
        pieces = list(model.generate_stream(processor, **inputs, generation_mode="audio", max_new_tokens=10))
    finally:
        hook.remove()
    assert pieces and grad_modes and not any(grad_modes)
    assert torch.is_grad_enabled()  # and leave the caller's mode as it was


def test_streamer_in_a_thread_and_transformers_text_streamer(fixture_pair, tmp_path):
    processor, model = fixture_pair
    inputs = chat_inputs(processor, question(tmp_path))
    out = model.generate(**inputs, generation_mode="audio", max_new_tokens=20)
    (text,) = processor.post_process_multimodal_output(out, generation_mode="text")

    streamer = OmniDRCAStreamer(processor, codec=model.speech_codec, chunk_steps=2, timeout=60)
    thread = threading.Thread(target=model.generate, kwargs=dict(**inputs, generation_mode="audio",
                                                                 max_new_tokens=20, streamer=streamer))
    thread.start()
    pieces = list(streamer)
    thread.join()
    assert "".join(p.text for p in pieces) == text
    audio = np.concatenate([p.audio for p in pieces if p.audio is not None])
    np.testing.assert_allclose(audio, out.waveform[0, : int(out.waveform_lengths[0])].numpy(), atol=1e-5)

    # transformers' own text streamer sees the text stream (special tokens skipped)
    hf_streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=60)
    thread = threading.Thread(target=model.generate, kwargs=dict(**inputs, generation_mode="audio",
                                                                 max_new_tokens=20, streamer=hf_streamer))
    thread.start()
    streamed = "".join(hf_streamer)
    thread.join()
    assert streamed.strip() == text.strip()


def test_streamer_reports_generation_errors_to_the_consumer(fixture_pair):
    processor, model = fixture_pair
    streamer = OmniDRCAStreamer(processor, codec=model.speech_codec, timeout=60)
    raised = []

    def run():
        try:
            model.generate(input_ids=torch.ones(1, 0, dtype=torch.long), streamer=streamer)
        except ValueError as error:
            raised.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    with pytest.raises(RuntimeError, match="generation failed"):
        list(streamer)
    thread.join()
    assert len(raised) == 1


def test_codec_receptive_radius_bounds_the_influence_of_one_code():
    """Independent check of `receptive_radius_codes`: change one code, see which samples move."""
    from modeling_omnidrca import OmniDRCASpeechCodec, OmniDRCASpeechCodecConfig

    for kwargs in (dict(), dict(decoder_layers=3, kernel_size=5)):
        config = OmniDRCASpeechCodecConfig(**kwargs)
        torch.manual_seed(0)
        codec = OmniDRCASpeechCodec(config).eval()
        with torch.no_grad():
            for p in codec.parameters():  # strong random weights, so every path carries signal
                p.add_(torch.randn_like(p) * 0.1)
            codes = torch.randint(0, config.codebook_size, (1, 80))
            changed = codes.clone()
            changed[0, 40] = (changed[0, 40] + 1) % config.codebook_size
            moved = (codec.decode(codes)[0] - codec.decode(changed)[0]).abs() > 1e-6
        affected = moved.nonzero().flatten() // config.samples_per_code
        reach = max(40 - int(affected.min()), int(affected.max()) - 40)
        assert 0 < reach <= receptive_radius_codes(config) <= reach + 3


# --- transformers' any-to-any pipeline, from the saved folder only ------------------------------------------


def test_any_to_any_pipeline_with_trust_remote_code(tmp_path):
    conversation = question(tmp_path)
    script = """
        import json, sys
        from transformers import AutoModel, AutoProcessor, pipeline
        folder, wav = sys.argv[1], sys.argv[2]
        chat = [{"role": "user", "content": [{"type": "audio", "path": wav}]}]
        pipe = pipeline("any-to-any", model=folder, trust_remote_code=True)
        text = pipe(chat, generation_mode="text", max_new_tokens=12)[0]["generated_text"][-1]["content"]
        audio = pipe(chat, generation_mode="audio", max_new_tokens=12)[0]["generated_audio"]
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        model = AutoModel.from_pretrained(folder, trust_remote_code=True)
        inputs = processor.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True,
                                               return_tensors="pt")
        direct = model.generate(**inputs, generation_mode="audio", max_new_tokens=12)
        print(json.dumps({
            "text": text,
            "direct_text": processor.post_process_multimodal_output(model.generate(**inputs, max_new_tokens=12))[0],
            "audio_len": int(audio.shape[0]), "audio_rms": float((audio ** 2).mean() ** 0.5),
            "direct_len": int(direct.waveform_lengths[0]),
            "max_diff": float(abs(audio - direct.waveform[0, : int(direct.waveform_lengths[0])].numpy()).max()),
            "module": type(model).__module__,
        }))
    """
    out = run_without_package(script, [FIXTURE.resolve(), conversation[0]["content"][0]["path"]], tmp_path)
    result = json.loads(out.strip().splitlines()[-1])
    assert not result["module"].startswith("modeling_omnidrca")  # the copied code, not the package
    assert result["text"] == result["direct_text"] and result["text"]
    assert result["audio_len"] == result["direct_len"] > 0 and result["audio_rms"] > 0
    assert result["max_diff"] < 1e-5


# --- bad arguments -------------------------------------------------------------------------------------------


def test_bad_arguments_raise_clear_errors(fixture_pair, tmp_path):
    config, model = build()
    inputs = prompts(config)
    with pytest.raises(ValueError, match="generation_mode must be one of"):
        model.generate(**inputs, generation_mode="speech")
    with pytest.raises(ValueError, match="non-empty"):
        model.generate(input_ids=torch.zeros(1, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="non-empty"):
        model.generate()
    with pytest.raises(ValueError, match="num_beams"):
        model.generate(**inputs, num_beams=3)
    with pytest.raises(ValueError, match="Unsupported generate argument"):
        model.generate(**inputs, speech_temprature=0.7)
    with pytest.raises(ValueError, match="either `seed` or `generator`"):
        model.generate(**inputs, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(**inputs, max_new_tokens=0)
    right = prompts(config, (300, 175))
    right["input_ids"] = torch.stack([r.roll(int((r == 0).sum()) * -1) for r in right["input_ids"]])
    right["attention_mask"] = right["attention_mask"].flip(-1)
    with pytest.raises(ValueError, match="right-padded"):
        model.generate(**right)
    # k mismatch: a processor built for k=1 lays out 5x the audio slots a k=5 model expects
    processor, fixture_model = fixture_pair
    assert fixture_model.config.group_size == 5
    wrong_k = type(processor)(processor.feature_extractor, processor.tokenizer, group_size=1,
                              speech_vocab_size=processor.speech_vocab_size)
    with pytest.raises(ValueError, match="group_size"):
        fixture_model.generate(**chat_inputs(wrong_k, question(tmp_path)), generation_mode="audio")
