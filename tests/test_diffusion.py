"""The diffusion speech head: continuous codec latents from a small DiT by flow matching (tiny configs, CPU)."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import AutoModel, AutoProcessor

from modeling_omnidrca import OmniDRCAConfig, OmniDRCAForConditionalGeneration, build_assistant_streams
from modeling_omnidrca.compose import replace_speech_head
from modeling_omnidrca.diffusion_head import OmniDRCADiffusionHead
from omnidrca_tester import TINY_DIFFUSION, OmniDRCAModelTester
from remote_code import run_without_package

FIXTURE = Path(__file__).parent / "fixtures" / "tiny-random-omnidrca"


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tiny models run many small steps: one thread avoids thread-pool hand-offs (and oversubscription
    on a shared CPU)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def build(seed: int = 0, **diffusion):
    tester = OmniDRCAModelTester(speech_head_type="diffusion", diffusion_config={**TINY_DIFFUSION, **diffusion})
    config = tester.get_config()
    torch.manual_seed(seed)
    return tester, config, OmniDRCAForConditionalGeneration(config)


@pytest.fixture(scope="module")
def pair():
    """The tiny fixture's processor and its model with a diffusion head instead of the SRH."""
    processor = AutoProcessor.from_pretrained(FIXTURE, trust_remote_code=True)
    torch.manual_seed(0)
    model = replace_speech_head(OmniDRCAForConditionalGeneration.from_pretrained(FIXTURE), "diffusion", TINY_DIFFUSION)
    return processor, model.eval()


def question(tmp_path, seconds=1.5):
    t = np.arange(int(seconds * 16000)) / 16000
    path = tmp_path / "question.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32), 16000)
    conversation = [{"role": "user", "content": [{"type": "audio", "path": str(path)}]}]
    return conversation


def chat_inputs(processor, conversation):
    return processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                         return_tensors="pt")


def keep_speaking(model):
    """Make the stop head always answer "a full group": speech runs until max_new_tokens."""
    with torch.no_grad():
        model.speech_head.stop_head.weight.zero_()
        model.speech_head.stop_head.bias.fill_(-10.0)
        model.speech_head.stop_head.bias[-1] = 10.0


# --- config and layout -----------------------------------------------------------------------------


def test_unknown_head_type_raises_a_clear_error():
    with pytest.raises(ValueError, match=r"Unknown `speech_head_type` 'vq'.*'srh'.*'diffusion'"):
        OmniDRCAModelTester(speech_head_type="vq").get_config()
    with pytest.raises(ValueError, match="ode_solver"):
        OmniDRCAConfig(speech_head_type="diffusion", diffusion_config={"ode_solver": "rk4"})
    with pytest.raises(ValueError, match="multiple of `num_attention_heads`"):
        OmniDRCAConfig(speech_head_type="diffusion", diffusion_config={"hidden_size": 30, "num_attention_heads": 4})


def test_latents_sit_where_the_codes_are_in_the_stream_layout():
    _, config, _ = build()
    codes = list(range(7))
    latents = torch.arange(7 * 3, dtype=torch.float32).view(7, 3)
    turn = build_assistant_streams([11, 12], codes, config, latents)
    flat_ids, flat_latents = turn.speech_ids.flatten(), turn.speech_latents.flatten(0, 1)  # (S·k,), (S·k, d)
    frames = (flat_ids >= 0) & (flat_ids < config.speech_vocab_size)
    assert torch.equal(flat_latents[frames], latents)  # same order as the codes
    assert not flat_latents[~frames].any()
    with pytest.raises(ValueError, match="one latent per code"):
        build_assistant_streams([11], codes, config, latents[:5])


def test_forward_losses_and_missing_latents(pair):
    tester, config, model = build()
    batch = tester.prepare_inputs(config)
    out = model(**batch)
    assert out.speech_logits is None and out.speech_loss > 0 and out.stop_loss > 0
    expected = (out.text_loss + config.speech_loss_weight * out.speech_loss + config.contrastive_weight
                * out.contrastive_loss + config.diffusion_config.stop_loss_weight * out.stop_loss)
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert model.speech_head.out.weight.grad.abs().sum() > 0  # adaLN-Zero output layer learns
    assert model.model.speech_embed.proj_in.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="speech_latents"):
        model(**{k: v for k, v in batch.items() if k != "speech_latents"})


def test_flow_matching_loss_decreases_on_a_tiny_overfit_batch():
    tester, config, model = build(condition_dropout=0.0)
    head = model.speech_head
    gen = torch.Generator().manual_seed(0)
    # A fixed batch of 6 groups: backbone states, normalised targets (the last one ends after 2 frames), and
    # the previous groups' latents (the first one has none).
    hidden = torch.randn(6, config.text_config.hidden_size, generator=gen)
    target = torch.randn(6, 5, 3, generator=gen)
    target_mask = torch.ones(6, 5, dtype=torch.bool)
    target_mask[-1, 2:] = False
    previous = torch.randn(6, 5, 3, generator=gen)
    previous_mask = torch.ones(6, 5, dtype=torch.bool)
    previous_mask[0] = False
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    torch.manual_seed(1)
    losses = []
    for _ in range(150):
        loss = head.flow_matching_loss(hidden, target * target_mask[..., None], target_mask, previous, previous_mask)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert last < 0.5 * first, (first, last)
    # and through the whole model's forward, the speech loss moves down too
    batch = tester.prepare_inputs(config, transcripts=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    forward_losses = []
    for _ in range(8):
        out = model(**batch)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        forward_losses.append(out.speech_loss.item())
    assert np.mean(forward_losses[-3:]) < np.mean(forward_losses[:3])


# --- generation ------------------------------------------------------------------------------------


def test_sampling_with_a_fixed_seed_is_deterministic(pair, tmp_path):
    processor, model = pair
    inputs = chat_inputs(processor, question(tmp_path))
    kwargs = dict(generation_mode="audio", max_new_tokens=8, do_sample=True, temperature=0.9)
    a = model.generate(**inputs, seed=7, **kwargs)
    b = model.generate(**inputs, seed=7, **kwargs)
    c = model.generate(**inputs, seed=8, **kwargs)
    assert a.speech_latents.abs().sum() > 0
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.speech_ids, b.speech_ids)
    assert torch.equal(a.speech_latents, b.speech_latents) and torch.equal(a.waveform, b.waveform)
    assert not torch.equal(a.speech_latents, c.speech_latents)
    greedy = [model.generate(**inputs, generation_mode="audio", max_new_tokens=8) for _ in range(2)]
    assert torch.equal(greedy[0].speech_latents, greedy[1].speech_latents)  # greedy: fixed-seed noise


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_ode_steps_change_the_cost_linearly(pair, tmp_path, solver):
    processor, model = pair
    keep_speaking(model)
    inputs = chat_inputs(processor, question(tmp_path))
    calls, rows = [], []
    def count(module, args, out):
        calls.append(1)
        rows.append(out.shape[0])

    hook = model.speech_head.register_forward_hook(count)
    steps_run = 6
    groups = steps_run - model.config.speech_delay  # speech rows that run the DiT
    counted = {}
    try:
        for steps in (1, 2, 4, 8):
            calls.clear()
            model.generate(**inputs, generation_mode="audio", max_new_tokens=steps_run, speech_ode_steps=steps,
                           speech_ode_solver=solver, return_waveform=False)
            counted[steps] = len(calls)
        calls.clear(), rows.clear()
        model.generate(**inputs, generation_mode="audio", max_new_tokens=steps_run, speech_ode_steps=4,
                       speech_ode_solver=solver, speech_guidance_scale=2.0, return_waveform=False)
        guided_calls, guided_rows = len(calls), set(rows)
    finally:
        hook.remove()
    per_step = 1 if solver == "euler" else 2  # Heun: two evaluations per step, the last step is Euler
    for steps, n in counted.items():
        assert n == groups * (per_step * steps - (per_step - 1)), (solver, counted)
    assert counted[8] - counted[4] == 2 * (counted[4] - counted[2]) == 4 * per_step * groups  # linear in steps
    assert guided_calls == counted[4] and guided_rows == {2}  # guidance batches cond + uncond in one call


def test_generate_text_mode_and_stop_head(pair, tmp_path):
    processor, model = pair
    inputs = chat_inputs(processor, question(tmp_path))
    calls = []
    hook = model.speech_head.register_forward_hook(lambda *args: calls.append(1) and None)
    try:
        text = model.generate(**inputs, generation_mode="text", max_new_tokens=6)
    finally:
        hook.remove()
    assert not calls and text.speech_ids is None
    # A stop head that answers "3 frames, then the end" at once: 3 frames, [eos], and a 3-frame wave.
    with torch.no_grad():
        model.speech_head.stop_head.weight.zero_()
        model.speech_head.stop_head.bias.fill_(-10.0)
        model.speech_head.stop_head.bias[3] = 10.0
    out = model.generate(**inputs, generation_mode="audio", max_new_tokens=10)
    cfg = model.config
    assert out.speech_lengths.tolist() == [3] and int(out.speech_ids[0, 3]) == cfg.speech_eos_token_id
    assert (out.speech_ids[0, :3] < cfg.speech_vocab_size).all() and out.waveform_lengths.tolist() == [3 * 640]
    assert not out.speech_latents[0, 3:].any()
    codes = model.speech_codec.quantizer.latents_to_codes(out.speech_latents[0, :3])
    assert torch.equal(codes, out.speech_ids[0, :3])  # ids are the latents' FSQ codes
    expected = model.speech_codec.decode_continuous(out.speech_latents[:, :3])[0]
    torch.testing.assert_close(out.waveform[0], expected)
    (wave,) = processor.post_process_multimodal_output(out, generation_mode="audio")
    assert wave.shape == (3 * 640,)
    out.waveform = None  # without the waveform, the processor decodes the latents
    (again,) = processor.post_process_multimodal_output(out, generation_mode="audio", codec=model.speech_codec)
    np.testing.assert_allclose(again, wave, atol=1e-6)


@pytest.mark.parametrize("chunk_steps", [1, 3])
def test_generate_stream_yields_what_generate_returns(pair, tmp_path, chunk_steps):
    processor, model = pair
    keep_speaking(model)
    inputs = chat_inputs(processor, question(tmp_path))
    out = model.generate(**inputs, generation_mode="audio", max_new_tokens=12)
    pieces = list(model.generate_stream(processor, chunk_steps=chunk_steps, **inputs, generation_mode="audio",
                                        max_new_tokens=12))
    (text,) = processor.post_process_multimodal_output(out, generation_mode="text")
    assert "".join(p.text for p in pieces) == text
    chunks = [p.audio for p in pieces if p.audio is not None]
    frames = int(out.speech_lengths[0])
    assert frames == (12 - model.config.speech_delay) * 5
    np.testing.assert_allclose(np.concatenate(chunks), out.waveform[0, : frames * 640].numpy(), atol=1e-5)


# --- checkpoints -----------------------------------------------------------------------------------


REMOTE = """
import json, sys, torch
from transformers import AutoModel
folder = sys.argv[1]
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
batch = torch.load(sys.argv[2])
prompt = batch.pop("prompt")
torch.manual_seed(0)
with torch.no_grad():
    out = model(**batch)
gen = model.generate(input_ids=prompt, generation_mode="audio", max_new_tokens=5)
print(json.dumps({"class": type(model.speech_head).__name__, "loss": float(out.loss),
                  "mean": model.model.speech_embed.latent_mean.tolist(), "latents": gen.speech_latents.sum().item()}))
"""


def test_save_load_and_trust_remote_code_roundtrip(tmp_path):
    tester, config, model = build()
    model.set_speech_latent_stats(torch.tensor([0.1, -0.2, 0.3]), torch.tensor([0.5, 0.6, 0.7]))
    model.eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    assert (folder / "diffusion_head.py").exists()
    assert json.loads((folder / "config.json").read_text())["diffusion_config"]["hidden_size"] == 32
    batch = tester.prepare_inputs(config)
    prompt = torch.tensor([[1, 10, 11, 2]])  # a text-only prompt for generation
    torch.manual_seed(0)
    with torch.no_grad():
        expected = model(**batch)
    generated = model.generate(input_ids=prompt, generation_mode="audio", max_new_tokens=5)

    loaded = AutoModel.from_pretrained(folder).eval()
    assert isinstance(loaded.speech_head, OmniDRCADiffusionHead)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    torch.manual_seed(0)
    with torch.no_grad():
        out = loaded(**batch)
    torch.testing.assert_close(out.loss, expected.loss, rtol=0, atol=0)

    torch.save({**batch, "prompt": prompt}, tmp_path / "batch.pt")
    remote = json.loads(run_without_package(REMOTE, [folder, tmp_path / "batch.pt"], tmp_path).strip().splitlines()[-1])
    assert remote["class"] == "OmniDRCADiffusionHead"
    assert remote["loss"] == pytest.approx(float(expected.loss), rel=1e-6)
    assert remote["mean"] == pytest.approx([0.1, -0.2, 0.3])
    assert remote["latents"] == pytest.approx(float(generated.speech_latents.sum()), rel=1e-5)


def test_srh_arguments_are_refused_on_the_other_head(pair, tmp_path):
    processor, _ = pair
    srh = OmniDRCAForConditionalGeneration.from_pretrained(FIXTURE).eval()
    inputs = chat_inputs(processor, question(tmp_path))
    with pytest.raises(ValueError, match="speech_ode_steps"):
        srh.generate(**inputs, generation_mode="audio", speech_ode_steps=4)
    with pytest.raises(ValueError, match="speech_head_type='diffusion'"):
        srh.set_speech_latent_stats(torch.zeros(3), torch.ones(3))


# --- TRL / PEFT training ---------------------------------------------------------------------------


def test_trl_sft_and_lora_train_the_diffusion_head(tmp_path):
    from peft import LoraConfig

    from modeling_omnidrca import OmniDRCAFeatureExtractor, OmniDRCAProcessor
    from modeling_omnidrca.tokenization import stream_token_ids, train_text_tokenizer
    from processing.cache import add_answer_codes
    from test_sft import WORDS, rows
    from training.sft import OmniDRCACollator, build_trainer, prepare_dataset, sft_config, speech_latent_stats

    tokenizer = train_text_tokenizer([" ".join(WORDS)] * 4, vocab_size=300)
    text = dict(model_type="qwen2", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    config = OmniDRCAModelTester(text_config=text, speech_head_type="diffusion", diffusion_config=TINY_DIFFUSION,
                                 **stream_token_ids(tokenizer)).get_config()
    processor = OmniDRCAProcessor(OmniDRCAFeatureExtractor(), tokenizer, speech_vocab_size=config.speech_vocab_size)
    torch.manual_seed(0)
    model = OmniDRCAForConditionalGeneration(config)
    data = prepare_dataset(add_answer_codes(rows(), model.speech_codec), model.speech_codec, latents=True)
    for row in data:  # one latent frame per cached code, empty for text answers
        assert len(row["answer_latents"]) == len(row["answer_codes"])
    mean, std = speech_latent_stats(data, model.speech_codec)
    model.set_speech_latent_stats(mean, std)
    batch = OmniDRCACollator(processor)(list(data)[:4])
    assert batch["speech_latents"].shape == (*batch["speech_ids"].shape, 3)

    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    args = sft_config(str(tmp_path / "full"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
                      logging_steps=1, save_strategy="no", use_cpu=True)
    trainer = build_trainer(model, processor, data, args)
    trainer.train()
    moved = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert {"speech_head.out.weight", "speech_head.stop_head.weight", "model.speech_embed.proj_in.weight"} <= moved
    logged = next(entry for entry in trainer.state.log_history if "loss" in entry)
    assert logged["speech_loss"] > 0 and logged["stop_loss"] > 0
    torch.testing.assert_close(model.model.speech_embed.latent_mean, mean)  # statistics are buffers, not trained

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=r"model\.language_model\.layers\.\d+\.self_attn\.(q|v)_proj",
                      modules_to_save=["speech_head"])
    args = sft_config(str(tmp_path / "lora"), max_steps=2, per_device_train_batch_size=4, learning_rate=1e-2,
                      logging_steps=1, save_strategy="no", use_cpu=True)
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    lora_trainer = build_trainer(model, processor, data, args, peft_config=lora)
    lora_trainer.train()
    saved_moved = [n for n, p in lora_trainer.model.named_parameters()
                   if "modules_to_save" in n and "speech_head" in n and p.requires_grad
                   and not torch.equal(p.detach(), base[n.replace("base_model.model.", "").replace("modules_to_save.default.", "")])]
    assert saved_moved


# --- the shipped diffusion demo --------------------------------------------------------------------

DEMO = Path(__file__).resolve().parents[1] / "checkpoints" / "omnidrca-demo-diffusion"

DEMO_ANSWER = """
import json, sys
import numpy as np, torch
from transformers import AutoModel, AutoProcessor
torch.set_num_threads(1)
folder, wav = sys.argv[1], sys.argv[2]
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
conversation = [{"role": "user", "content": [{"type": "audio", "audio": wav}]}]
inputs = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True,
                                       return_tensors="pt")
both = model.generate(**inputs, generation_mode="audio", max_new_tokens=60)
wave = processor.post_process_multimodal_output(both, generation_mode="audio")[0]
print(json.dumps({
    "head": model.config.speech_head_type,
    "audio_text": processor.post_process_multimodal_output(both, generation_mode="text")[0],
    "std": model.model.speech_embed.latent_std.tolist(),
    "seconds": len(wave) / model.speech_codec.config.sampling_rate,
    "rms": float(np.sqrt(np.mean(np.square(wave)))) if len(wave) else 0.0,
}))
"""


def test_diffusion_demo_checkpoint_is_small_and_answers(tmp_path):
    from training.evaluate import is_correct

    size = sum(f.stat().st_size for f in DEMO.rglob("*") if f.is_file())
    assert size <= 60 * 2**20
    config = json.loads((DEMO / "config.json").read_text())
    assert config["speech_head_type"] == "diffusion" and (DEMO / "diffusion_head.py").exists()
    question = json.loads((DEMO / "examples" / "questions.json").read_text())["seven_plus_twelve.wav"]["question"]
    out = run_without_package(DEMO_ANSWER, [DEMO, DEMO / "examples" / "seven_plus_twelve.wav"], tmp_path)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["head"] == "diffusion" and is_correct("seven plus twelve is nineteen", result["audio_text"]), result
    assert "plus" in question and all(0.3 < s < 1.0 for s in result["std"])  # corpus latent statistics, not 1.0
    assert 1.0 < result["seconds"] < 5.0 and result["rms"] > 0.01
