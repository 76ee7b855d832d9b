"""A frozen backbone with LoRA still trains the embedding rows of added tokens; the rows survive
checkpoints, resuming and `training.merge_run`."""

import pytest
import torch
from peft import LoraConfig, PeftModel

from test_sft import fresh_model, setup  # noqa: F401  (the module fixture)
from training.merge_run import merge_run
from training.sft import OmniDRCACollator, build_trainer, freeze_modules, sft_config
from training.token_rows import ROWS_FILE, TokenRowsCallback, load_token_rows, train_token_rows


def test_only_the_added_rows_train_and_merge_reproduces_the_run(setup, tmp_path):  # noqa: F811
    config, processor, data = setup
    model = fresh_model(config)
    freeze_modules(model, backbone=True, audio_encoder=True)
    vocab = model.get_input_embeddings().num_embeddings
    start = vocab - 6  # the stream tokens are the last ids of the fixture's tokenizer
    before = model.get_input_embeddings().weight.detach().clone()
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=r"model\.language_model\.layers\.\d+\.self_attn\.(q|v)_proj",
                      modules_to_save=["multi_modal_projector", "speech_embed", "speech_head"])
    args = sft_config(str(tmp_path / "run"), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-2,
                      weight_decay=0.0, logging_steps=1, save_steps=3, use_cpu=True)
    trainer = build_trainer(model, processor, data, args, peft_config=lora)
    embedding = model.get_input_embeddings()
    train_token_rows(embedding, start)
    trainer.add_callback(TokenRowsCallback(embedding, start))
    trainer.train()

    after = embedding.weight.detach()
    assert torch.equal(after[:start], before[:start]), "a pretrained row moved"
    assert not torch.equal(after[start:], before[start:]), "the added rows did not train"
    checkpoint = tmp_path / "run" / "checkpoint-3"
    assert (checkpoint / ROWS_FILE).is_file()

    base_dir = tmp_path / "base"
    fresh_model(config).save_pretrained(base_dir)
    batch = OmniDRCACollator(processor)(list(data)[:4])
    with torch.no_grad():
        trained = float(trainer.model(**batch).loss)
        merged = float(merge_run(checkpoint, base_dir)(**batch).loss)
        adapter_only = float(PeftModel.from_pretrained(fresh_model(config), str(checkpoint)).merge_and_unload()(**batch).loss)
    assert merged == pytest.approx(trained, rel=1e-4)
    assert adapter_only != pytest.approx(trained, rel=1e-4), "the rows should matter to the loss"

    restored = fresh_model(config).get_input_embeddings()
    assert load_token_rows(restored, str(checkpoint))
    assert torch.equal(restored.weight.detach()[start:], after[start:])
    assert not load_token_rows(restored, str(tmp_path))  # no rows saved there


def test_a_start_outside_the_vocabulary_is_refused(setup):  # noqa: F811
    config, _, _ = setup
    embedding = fresh_model(config).get_input_embeddings()
    with pytest.raises(ValueError, match="trainable_token_start"):
        train_token_rows(embedding, embedding.num_embeddings)
