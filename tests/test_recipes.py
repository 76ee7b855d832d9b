"""Training recipes end to end: YAML configs, the TRL entry point, freezing, kill-and-resume, a 2-process
`accelerate launch` run, the codec recipe, and training curves (tiny models, an espeak-ng corpus, CPU)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import load_config_from_file
from datasets import load_from_disk
from safetensors.torch import load_file

from modeling_omnidrca import OmniDRCAForConditionalGeneration, OmniDRCASpeechCodec
from processing.corpus import build_corpus
from training import train as lm_recipe
from training import train_codec as codec_recipe
from training.checkpoints import is_complete_checkpoint, last_complete_checkpoint, resolve_resume
from training.curves import available_loggers, plot_log_history
from training.sft import freeze_modules, prepare_dataset

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "training" / "configs"
TINY = ROOT / "tests" / "fixtures" / "tiny-random-omnidrca"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus"
    build_corpus(path, 24, 8, 0, seed=0, progress=False)
    return path


def recipe_command(corpus, output_dir, *extra) -> list[str]:
    return ["-m", "training.train", "--config", str(CONFIGS / "tiny_smoke.yaml"), "--dataset_path", str(corpus),
            "--output_dir", str(output_dir), *map(str, extra)]


def run_recipe(corpus, output_dir, *extra) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, *recipe_command(corpus, output_dir, *extra)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def max_weight_difference(a: Path, b: Path) -> float:
    sa, sb = load_file(a), load_file(b)
    assert sa.keys() == sb.keys()
    return max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)


# ------------------------------------------------------------------------------------------ configs


def test_stage_configs_parse_with_project_defaults():
    parse = lambda name: lm_recipe.make_parser().parse_args_and_config(["--config", str(CONFIGS / name)])  # noqa: E731
    script, args, model = parse("stage1_alignment.yaml")
    assert script.tasks == ["asr", "t2s"] and script.contrastive_weight > 0
    # The project's SFT defaults hold where the YAML is silent: TRL must not re-tokenise or drop columns.
    assert args.remove_unused_columns is False and args.dataset_kwargs == {"skip_prepare_dataset": True}
    assert args.resume_from_checkpoint == "auto"
    script, args, model = parse("stage2_sft.yaml")
    assert set(script.tasks) == {"asr", "s2t", "s2s", "t2s", "repeat"}
    assert model.model_name_or_path == "runs/stage1"  # stage 2 continues from stage 1
    script, args, model = parse("lora.yaml")
    # The demonstration keeps the speech head frozen (training it overfit the SRH): adapters only.
    assert model.use_peft and not model.lora_modules_to_save and script.dataset_path == "data/lora-numbers"
    # Command-line flags override the YAML.
    script, args, _ = lm_recipe.make_parser().parse_args_and_config(
        ["--config", str(CONFIGS / "stage2_sft.yaml"), "--max_steps", "7", "--tasks", "s2t"])
    assert args.max_steps == 7 and script.tasks == ["s2t"]
    script, args = codec_recipe.make_parser().parse_args_and_config(["--config", str(CONFIGS / "codec.yaml")])
    assert script.fsq_levels == [8, 5, 5, 5] and args.remove_unused_columns is False
    # The SmolLM2 demo's decoder retraining keeps codec_festival's codes and the schedule of the run it shipped from.
    script, args = codec_recipe.make_parser().parse_args_and_config(["--config", str(CONFIGS / "codec_festival_decoder.yaml")])
    assert script.freeze_encoder and script.grow_decoder_layers == 1 and script.codec_name_or_path == "runs/codec-festival"
    assert args.max_steps == 3000 and args.lr_scheduler_kwargs == {"num_cycles": 0.371795}


def test_make_smollm2_packages_with_every_corpus_it_builds():
    """The shell recipe's `package` call parses and names every `corpus-smollm2*` training corpus it builds."""
    import re
    import shlex

    from training.package_smollm2 import parse_args

    script = (Path(__file__).parent.parent / "training" / "make_smollm2.sh").read_text().replace("\\\n", " ")
    call = re.search(r"package\(\) \{ python -m training\.package_smollm2 (.*?) \"\$@\"; \}", script).group(1)
    args = parse_args(shlex.split(call))
    assert args.abilities == "training/cards/smollm2_abilities.md" and args.model == "runs/smollm2-stage18-merged"
    seeds = re.search(r"for seed in ([\d ]+); do", script).group(1).split()  # one build line, a corpus per seed
    outputs = re.findall(r"--output (data/corpus-smollm2[\w$-]*)", script)
    built = {o.replace("$seed", n) for o in outputs for n in (seeds if "$seed" in o else [""])}
    built -= {"data/corpus-smollm2-qa"}  # the quiz's test set
    assert {str(Path(p).parent) for p in args.corpus_info} == built


def test_smollm2_configs_chain_and_train_the_added_rows_without_decay():
    parse = lambda name: lm_recipe.make_parser().parse_args_and_config(["--config", str(CONFIGS / name)])  # noqa: E731
    stages = (("smollm2_stage1.yaml", "runs/smollm2-init"), ("smollm2_stage2.yaml", "runs/smollm2-stage1-merged"),
              ("smollm2_stage3.yaml", "runs/smollm2-stage2-merged"),
              ("smollm2_stage4.yaml", "runs/smollm2-stage3-r64"),  # stage 4 starts from what shipped: rank 64
              ("smollm2_stage5.yaml", "runs/smollm2-stage4-r64"), ("smollm2_stage6.yaml", "runs/smollm2-stage5-r64"),
              ("smollm2_stage7.yaml", "runs/smollm2-stage6-r64"), ("smollm2_stage8.yaml", "runs/smollm2-stage7-r64"),
              ("smollm2_stage9.yaml", "runs/smollm2-stage8-r64"), ("smollm2_stage10.yaml", "runs/smollm2-stage9-r64"),
              ("smollm2_stage11.yaml", "runs/smollm2-stage10-r64"), ("smollm2_stage12.yaml", "runs/smollm2-stage10-r64"))
    tracker, args, model = parse("smollm2_stage13.yaml")  # stage 12's backbone as it is; only the speech head trains
    assert model.model_name_or_path == "runs/smollm2-stage12-r64" and not model.use_peft
    assert tracker.speech_tracker_layers == 6 and tracker.trainable_modules == ["speech_head"]
    assert set(tracker.tasks) == {"s2s", "t2s", "repeat"}  # the rows with speech targets
    # Stage 14: the same on stage 10's backbone, switched to after_text; 14b goes on from it cut to rank 54.
    tracker, args, model = parse("smollm2_stage14.yaml")
    assert model.model_name_or_path == "runs/smollm2-stage10-r64" and tracker.speech_read == "after_text"
    assert tracker.speech_tracker_layers == 6 and tracker.trainable_modules == ["speech_head"] and not model.use_peft
    more, args, model = parse("smollm2_stage14b.yaml")
    assert model.model_name_or_path == "runs/smollm2-stage14-r54" and not more.speech_tracker_layers  # it has one
    assert more.mix_dataset_paths == ["data/corpus-smollm2-drill14"] and more.trainable_modules == ["speech_head"]
    # Stage 16: a LoRA from stage 15 with the short-utterance corpus (the model's config keeps `speech_read:
    # after_text`); 16b retrains the speech head alone on the backbone cut back to rank 54.
    words, args, model = parse("smollm2_stage16.yaml")
    assert model.model_name_or_path == "runs/smollm2-stage15-merged" and model.use_peft and words.freeze_backbone
    assert words.dataset_path == "data/corpus-smollm2-s5" and "data/corpus-smollm2-words" in words.mix_dataset_paths
    assert set(model.lora_modules_to_save) == {"multi_modal_projector", "speech_head"} and "asr" in words.tasks
    assert words.trainable_token_start == 49152 and args.weight_decay == 0.0
    head, args, model = parse("smollm2_stage16b.yaml")
    assert model.model_name_or_path == "runs/smollm2-stage16-r54" and head.trainable_modules == ["speech_head"]
    assert not model.use_peft and set(head.tasks) == {"s2s", "t2s", "repeat"}
    # Stage 17 (a trial, not in the chain): a small LoRA on 16b's backbone alone, the typed sums seen twice as often.
    sums, args, model = parse("smollm2_stage17.yaml")
    assert model.model_name_or_path == "runs/smollm2-stage16b-merged" and model.use_peft and not model.lora_modules_to_save
    assert sums.mix_dataset_paths.count("data/corpus-smollm2-typed") == 2 and sums.trainable_token_start is None
    # Stage 19: the speech head alone again, on stage 18 (16b with the second decoder), with broader speech rows.
    head, args, model = parse("smollm2_stage19.yaml")
    assert model.model_name_or_path == "runs/smollm2-stage18-merged" and head.trainable_modules == ["speech_head"]
    assert "data/corpus-smollm2-voice" in head.mix_dataset_paths and set(head.tasks) == {"s2s", "t2s", "repeat"}
    # Stage 20: the audio projector alone on stage 18, with many more open sentences to transcribe.
    ears, args, model = parse("smollm2_stage20.yaml")
    assert model.model_name_or_path == "runs/smollm2-stage18-merged" and not model.use_peft
    assert ears.trainable_modules == ["model.multi_modal_projector"] and set(ears.tasks) == {"asr", "s2t"}
    assert ears.dataset_path == "data/corpus-smollm2-s5" and "data/corpus-smollm2-asr" in ears.mix_dataset_paths
    for stage, start in stages:
        script, args, model = parse(stage)
        assert model.model_name_or_path == start and script.freeze_backbone and model.use_peft
        # SmolLM2's vocabulary ends at 49,151; the stream tokens after it train, and decay would move frozen rows.
        assert script.trainable_token_start == 49152 and args.weight_decay == 0.0
        assert set(model.lora_modules_to_save) == {"multi_modal_projector", "speech_embed", "speech_head"}
    assert parse("smollm2_stage2.yaml")[0].speech_loss_weight == 2.0
    assert parse("smollm2_stage3.yaml")[0].dataset_path == "data/corpus-smollm2-s1"  # the second corpus
    assert parse("smollm2_stage4.yaml")[0].dataset_path == "data/corpus-smollm2-s2"  # the third
    assert parse("smollm2_stage5.yaml")[0].dataset_path == "data/corpus-smollm2-s3"  # the fourth
    assert parse("smollm2_stage6.yaml")[0].dataset_path == "data/corpus-smollm2-s4"  # the fifth
    drill = parse("smollm2_stage7.yaml")[0]  # the sixth, and the question drill beside it
    assert drill.dataset_path == "data/corpus-smollm2-s5" and drill.mix_dataset_paths == ["data/corpus-smollm2-drill"]
    typed = parse("smollm2_stage8.yaml")[0]  # the same two, and the typed arithmetic drill
    assert typed.dataset_path == "data/corpus-smollm2-s5"  # the evaluation split comes from the first
    assert typed.mix_dataset_paths == ["data/corpus-smollm2-typed", "data/corpus-smollm2-drill"]
    assert all(parse(f"smollm2_stage{n}.yaml")[0].text_alignment is None for n in range(1, 13))
    # Stage 10 starts noising the speech the backbone reads; the model config's default (0) stays before it.
    assert [parse(f"smollm2_stage{n}.yaml")[0].speech_input_noise for n in range(1, 13)] == [None] * 9 + [0.4] * 3
    # The two experiments from stage 10: stage 11 lengthens the speech delay (to the longest arithmetic answer, 8
    # tokens, plus <abos>/<aeos>), stage 12 keeps it and reads speech only once the text pads.
    assert [parse(f"smollm2_stage{n}.yaml")[0].speech_delay for n in range(1, 13)] == [None] * 10 + [10, None]
    assert [parse(f"smollm2_stage{n}.yaml")[0].speech_read for n in range(1, 13)] == [None] * 11 + ["after_text"]
    assert parse("smollm2_stage10.yaml")[0].mix_dataset_paths[0] == "data/corpus-smollm2-s4"  # transcription rows
    spread, args, model = parse("smollm2_spread.yaml")  # the layout experiment: stage 5 with spread text
    assert spread.text_alignment == "spread" and model.model_name_or_path == "runs/smollm2-stage4-r64"
    assert spread.dataset_path == "data/corpus-smollm2-s3" and args.output_dir == "runs/smollm2-stage5-spread"
    script, args, model = parse("smollm2_lora_capitals.yaml")
    assert model.model_name_or_path == "checkpoints/omnidrca-smollm2" and not model.lora_modules_to_save


@pytest.mark.parametrize("name, kind", [("cpu_2proc", "MULTI_GPU"), ("ddp", "MULTI_GPU"), ("fsdp", "FSDP"),
                                        ("deepspeed_zero2", "DEEPSPEED")])
def test_accelerate_configs_load(name, kind):
    config = load_config_from_file(str(ROOT / "training" / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type.value == kind
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_version"] == 2
        # The wrapped classes must exist in the model, or FSDP would wrap nothing.
        model = OmniDRCAForConditionalGeneration.from_pretrained(TINY)
        present = {type(m).__name__ for m in model.modules()}
        assert set(config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(",")) <= present
    if kind == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == 2


# ------------------------------------------------------------------------------------------ data selection


def test_prepare_dataset_selects_tasks_and_refuses_empty(corpus):
    from datasets import load_from_disk

    model = OmniDRCAForConditionalGeneration.from_pretrained(TINY)
    train = load_from_disk(str(corpus))["train"]
    stage1 = prepare_dataset(train, model.speech_codec, ["asr", "t2s"])
    assert set(stage1["task"]) <= {"asr", "t2s"} and len(stage1) > 0 and "answer_codes" in stage1.column_names
    with pytest.raises(ValueError, match="Unknown task"):
        prepare_dataset(train, model.speech_codec, ["translate"])
    with pytest.raises(ValueError, match="empty"):
        prepare_dataset(train.select([]), model.speech_codec)


def test_mixed_corpora_train_on_every_train_split(corpus, tmp_path):
    # A second corpus of other tasks and seed: the mix holds both train splits' rows, the first's task filter
    # applies to each, and a corpus with no training rows is refused, naming it.
    drill = tmp_path / "drill"
    build_corpus(drill, 6, 0, 2, seed=3, tasks=("s2t",), progress=False)
    model = OmniDRCAForConditionalGeneration.from_pretrained(TINY)
    script = lm_recipe.OmniDRCAScriptArguments(dataset_path=str(corpus), mix_dataset_paths=[str(drill)])
    rows = lm_recipe.load_train_rows(script, model.speech_codec, latents=False)
    from datasets import load_from_disk

    first, second = (load_from_disk(str(path))["train"].to_dict() for path in (corpus, drill))
    assert list(rows["id"]) == first["id"] + second["id"] and set(second["task"]) == {"s2t"}
    script.tasks = ["s2t", "asr"]
    rows = lm_recipe.load_train_rows(script, model.speech_codec, latents=False)
    assert len(rows) == sum(t in ("s2t", "asr") for t in first["task"]) + len(second["id"])
    build_corpus(tmp_path / "test-only", 0, 0, 2, seed=3, progress=False)
    script.mix_dataset_paths = [str(tmp_path / "test-only")]
    with pytest.raises(ValueError, match="test-only"):
        lm_recipe.load_train_rows(script, model.speech_codec, latents=False)


def test_a_corpus_without_the_evaluation_split_is_refused_with_the_fix(corpus, tmp_path):
    from datasets import DatasetDict, load_from_disk

    train_only = tmp_path / "train-only"
    DatasetDict({"train": load_from_disk(str(corpus))["train"]}).save_to_disk(str(train_only))
    script, args, model_args = lm_recipe.make_parser().parse_args_and_config([
        "--config", str(CONFIGS / "tiny_smoke.yaml"), "--dataset_path", str(train_only), "--output_dir",
        str(tmp_path / "run"), "--max_steps", "1", "--report_to", "none",
    ])
    with pytest.raises(ValueError, match="no 'validation' split.*eval_split: none"):
        lm_recipe.main(script, args, model_args)


def test_freeze_backbone_keeps_the_text_lm_fixed(corpus, tmp_path):
    script, args, model_args = lm_recipe.make_parser().parse_args_and_config([
        "--config", str(CONFIGS / "tiny_smoke.yaml"), "--dataset_path", str(corpus), "--output_dir", str(tmp_path),
        "--freeze_backbone", "true", "--tasks", "asr", "t2s", "--max_steps", "3", "--eval_strategy", "no",
        "--save_strategy", "no", "--learning_rate", "1e-2", "--report_to", "none",
    ])
    lm_recipe.main(script, args, model_args)
    before = OmniDRCAForConditionalGeneration.from_pretrained(TINY).state_dict()
    after = OmniDRCAForConditionalGeneration.from_pretrained(tmp_path).state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved, "nothing trained"
    assert not any(k.startswith(("model.language_model.", "lm_head.", "speech_codec.")) for k in moved)
    assert any(k.startswith("model.audio_tower.") for k in moved) and any(k.startswith("speech_head.") for k in moved)
    assert json.loads((tmp_path / "train_results.json").read_text())["train_loss"] > 0


def test_a_lora_run_that_switches_the_layout_saves_and_merges_it(corpus, tmp_path):
    from modeling_omnidrca import OmniDRCAConfig, OmniDRCAProcessor
    from training.merge_run import main as merge_main

    run, merged = tmp_path / "run", tmp_path / "merged"
    script, args, model_args = lm_recipe.make_parser().parse_args_and_config([
        "--config", str(CONFIGS / "tiny_smoke.yaml"), "--dataset_path", str(corpus), "--output_dir", str(run),
        "--text_alignment", "spread", "--speech_delay", "3", "--speech_read", "after_text", "--use_peft", "true", "--lora_r", "2", "--tasks", "t2s",
        "--max_steps", "2",
        "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none",
    ])
    lm_recipe.main(script, args, model_args)
    assert OmniDRCAProcessor.from_pretrained(run).stream_layout.spreads_text
    assert OmniDRCAProcessor.from_pretrained(run).stream_layout.speech_read == "after_text"
    assert OmniDRCAProcessor.from_pretrained(run).speech_delay == 3
    merge_main(["--run", str(run), "--base", str(TINY), "--output", str(merged)])
    config, processor = OmniDRCAConfig.from_pretrained(merged), OmniDRCAProcessor.from_pretrained(merged)
    assert (config.text_alignment, config.speech_delay, config.speech_read) == ("spread", 3, "after_text")
    assert (processor.text_alignment, processor.speech_delay, processor.speech_read) == ("spread", 3, "after_text")
    base = OmniDRCAConfig.from_pretrained(TINY)
    assert (base.text_alignment, base.speech_delay, base.speech_read) == ("leading", 2, "always")  # untouched


def test_a_run_that_adds_a_tracker_trains_only_the_speech_head(corpus, tmp_path):
    from training.sft import train_only

    run = tmp_path / "run"
    script, args, model_args = lm_recipe.make_parser().parse_args_and_config([
        "--config", str(CONFIGS / "tiny_smoke.yaml"), "--dataset_path", str(corpus), "--output_dir", str(run),
        "--speech_read", "after_text", "--speech_tracker_layers", "1", "--trainable_modules", "speech_head",
        "--tasks", "t2s", "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no", "--report_to", "none",
    ])
    lm_recipe.main(script, args, model_args)
    base = OmniDRCAForConditionalGeneration.from_pretrained(TINY).state_dict()
    trained = OmniDRCAForConditionalGeneration.from_pretrained(run)
    assert trained.config.speech_tracker_layers == 1
    state = trained.state_dict()
    changed = {name for name in base if not torch.equal(base[name], state[name])}
    assert changed and all(name.startswith("speech_head.") for name in changed)
    assert any(name.startswith("speech_head.tracker.") for name in state)
    assert state["speech_head.tracker.out_proj.weight"].abs().sum() > 0  # it started at zero and trained
    from training.merge_run import main as merge_main

    merge_main(["--run", str(run), "--base", str(TINY), "--output", str(tmp_path / "plain")])  # a full run: copied
    plain = OmniDRCAForConditionalGeneration.from_pretrained(tmp_path / "plain")
    assert (plain.config.speech_tracker_layers, plain.config.speech_read) == (1, "after_text")
    assert all(torch.equal(value, plain.state_dict()[name]) for name, value in state.items())
    assert not (tmp_path / "plain" / "train_results.json").exists()
    with pytest.raises(ValueError, match="names no parameter"):
        train_only(trained, ["speech_heads"])
    model_args.use_peft = True
    with pytest.raises(ValueError, match="does not combine with use_peft"):
        lm_recipe.main(script, args, model_args)


def test_freeze_modules_names_what_it_froze():
    model = OmniDRCAForConditionalGeneration.from_pretrained(TINY)
    assert freeze_modules(model, backbone=True, audio_encoder=True) == [
        "speech_codec", "model.language_model", "lm_head", "model.audio_tower"]
    assert not any(p.requires_grad for p in model.model.audio_tower.parameters())
    assert all(p.requires_grad for p in model.speech_head.parameters())


# ------------------------------------------------------------------------------------------ resume


def test_killed_run_resumes_to_the_same_weights(corpus, tmp_path):
    steps = ["--max_steps", "16", "--save_steps", "4", "--eval_steps", "8"]
    reference = tmp_path / "uninterrupted"
    run_recipe(corpus, reference, *steps)

    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, *recipe_command(corpus, killed, *steps)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not is_complete_checkpoint(killed / "checkpoint-4") and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "train_results.json").exists()
    last = Path(last_complete_checkpoint(killed))
    step = int(last.name.split("-")[1])
    assert step < 16
    # A kill during a save leaves a torn checkpoint: weights half written, no trainer state. Make one.
    torn = killed / f"checkpoint-{step + 4}"
    torn.mkdir(exist_ok=True)
    for name in ("model.safetensors", "trainer_state.json"):
        (torn / name).unlink(missing_ok=True)
    (torn / "model.safetensors").write_bytes((last / "model.safetensors").read_bytes()[:1000])
    assert last_complete_checkpoint(killed) == str(last)
    kept = {p.name: p.read_bytes() for p in last.iterdir() if p.is_file()}

    out = run_recipe(corpus, killed, *steps)  # the same command again: resume_from_checkpoint is `auto`
    assert "train_loss" in json.loads((killed / "train_results.json").read_text())
    difference = max_weight_difference(reference / "model.safetensors", killed / "model.safetensors")
    print(f"max weight difference after resume: {difference:.3g}")
    assert difference <= 1e-6, f"resumed weights differ from the uninterrupted run by {difference}"
    # Nothing lost: the checkpoint it resumed from is intact, the torn one is set aside, not deleted.
    assert {p.name: p.read_bytes() for p in last.iterdir() if p.is_file()} == kept
    assert (killed / f"checkpoint-{step + 4}.incomplete" / "model.safetensors").exists()
    assert is_complete_checkpoint(killed / "checkpoint-16")
    assert (killed / "training_curves.png").read_bytes().startswith(PNG_MAGIC)
    history = json.loads((killed / "checkpoint-16" / "trainer_state.json").read_text())["log_history"]
    assert sorted({e["step"] for e in history if "loss" in e}) == list(range(1, 17)), out[-2000:]


def test_resume_refuses_an_incomplete_checkpoint(tmp_path):
    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    (folder / "trainer_state.json").write_text('{"global_step": 3')  # cut mid-write
    assert not is_complete_checkpoint(folder)
    with pytest.raises(ValueError, match="not a complete"):
        resolve_resume(str(folder), tmp_path)
    assert resolve_resume("auto", tmp_path) is None  # a fresh run: nothing to resume
    assert (tmp_path / "checkpoint-3.incomplete").is_dir()
    assert resolve_resume(None, tmp_path) is None


# ------------------------------------------------------------------------------------------ multi-process


def test_two_process_accelerate_launch(corpus, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "training" / "accelerate" / "cpu_2proc.yaml"), "--main_process_port", str(free_port()),
               *recipe_command(corpus, tmp_path, "--max_steps", "4", "--eval_steps", "2", "--save_steps", "2")]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "processes 2 (backend gloo)" in proc.stdout
    state = json.loads((tmp_path / "checkpoint-4" / "trainer_state.json").read_text())
    # Two processes x 4 rows per device: each optimizer step saw 8 of the 24 training rows.
    assert state["global_step"] == 4 and state["log_history"][-1]["epoch"] == pytest.approx(4 * 8 / 24)
    model = OmniDRCAForConditionalGeneration.from_pretrained(tmp_path)
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ------------------------------------------------------------------------------------------ codec, curves


def test_codec_recipe_trains_and_reports_reconstruction(corpus, tmp_path):
    script, args = codec_recipe.make_parser().parse_args_and_config([
        "--dataset_path", str(corpus), "--output_dir", str(tmp_path), "--fsq_levels", "4", "4", "2",
        "--encoder_hidden_size", "32", "--decoder_hidden_size", "32", "--encoder_layers", "1", "--decoder_layers", "1",
        "--max_steps", "4", "--per_device_train_batch_size", "4", "--learning_rate", "3e-3", "--logging_steps", "1",
        "--save_steps", "2", "--max_eval_clips", "4", "--use_cpu", "true", "--report_to", "none",
    ])
    metrics = codec_recipe.main(script, args)
    report = json.loads((tmp_path / "reconstruction.json").read_text())
    for stage in ("before", "after"):
        assert report[stage]["clips"] == 4 and report[stage]["codebook_size"] == 32
        assert report[stage]["log_spectral_distance_db"] > 0 and 0 < report[stage]["codebook_usage"] <= 1
    assert metrics["after_mel_l1"] == report["after"]["mel_l1"]
    codec = OmniDRCASpeechCodec.from_pretrained(tmp_path)
    assert codec.config.fsq_levels == [4, 4, 2]
    assert not torch.equal(codec.decoder.conv_in.weight, OmniDRCASpeechCodec(codec.config).decoder.conv_in.weight)
    history = json.loads((tmp_path / "checkpoint-4" / "trainer_state.json").read_text())["log_history"]
    assert all("mel_loss" in e and "stft_loss" in e for e in history if "loss" in e)
    assert (tmp_path / "training_curves.png").read_bytes().startswith(PNG_MAGIC)


def test_codec_recipe_retrains_a_decoder_on_mixed_corpora_keeping_the_codes(corpus, tmp_path):
    def parse(output_dir, *extra):
        return codec_recipe.make_parser().parse_args_and_config([
            "--dataset_path", str(corpus), "--output_dir", str(output_dir), "--max_steps", "2",
            "--per_device_train_batch_size", "4", "--learning_rate", "3e-3", "--save_steps", "2",
            "--max_eval_clips", "2", "--use_cpu", "true", "--report_to", "none", *extra,
        ])

    first = tmp_path / "codec"
    codec_recipe.main(*parse(first, "--fsq_levels", "4", "4", "2", "--encoder_hidden_size", "32",
                             "--decoder_hidden_size", "32", "--encoder_layers", "1", "--decoder_layers", "1"))
    script, args = parse(tmp_path / "decoder", "--codec_name_or_path", str(first), "--freeze_encoder", "true",
                         "--grow_decoder_layers", "1", "--mix_dataset_paths", str(corpus))
    single = codec_recipe.training_clips(parse(first)[0], load_from_disk(str(corpus)))
    assert len(codec_recipe.training_clips(script, load_from_disk(str(corpus)))) == 2 * len(single)
    codec_recipe.main(script, args)
    old = OmniDRCASpeechCodec.from_pretrained(first)
    new = OmniDRCASpeechCodec.from_pretrained(tmp_path / "decoder")
    assert new.config.decoder_layers == 2 and new.config.encoder_layers == 1
    assert all(torch.equal(a, b) for a, b in zip(old.encoder.parameters(), new.encoder.parameters()))
    assert not torch.equal(old.decoder.conv_in.weight, new.decoder.conv_in.weight)
    with pytest.raises(ValueError, match="codec_name_or_path"):
        codec_recipe.build_codec(parse(tmp_path / "x", "--freeze_encoder", "true")[0])


def test_plot_log_history(tmp_path):
    history = [{"step": s, "loss": 3.0 / s, "text_loss": 2.0 / s, "learning_rate": 1e-3} for s in range(1, 6)]
    history.append({"step": 5, "eval_loss": 0.9})
    out = plot_log_history(history, tmp_path / "curves.png")
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert plot_log_history([{"step": 1, "epoch": 0.1}], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_tensorboard_logs_when_installed(corpus, tmp_path):
    pytest.importorskip("tensorboard")  # an optional logger: the `dev` extra installs it, so CI runs this
    assert available_loggers() == ["tensorboard"]
    run_recipe(corpus, tmp_path, "--max_steps", "2", "--eval_strategy", "no", "--save_strategy", "no")
    assert list(tmp_path.rglob("events.out.tfevents.*"))
