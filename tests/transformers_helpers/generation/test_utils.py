"""`GenerationTesterMixin` for the sdist's `test_modeling_common.py` (written for OmniDRCA; see ../README.md).

transformers keeps its generation test module out of the sdist, and `test_modeling_common.py` imports the mixin
from it (and checks that a model that can `generate` is tested with it). This one holds OmniDRCA's own checks of
transformers' standard `generate` arguments on the text stream, each against an independent reference: greedy
tokens against a single full forward over the finished sequence, `min_new_tokens` / `bad_words_ids` /
`max_new_tokens` against their definitions, the dict outputs against the tokens they claim to have produced,
`inputs_embeds` and left-padded prompts against plain unpadded `input_ids`.

A tester class sets `model_tester` (with `prepare_config_and_inputs_for_common()`) and
`all_generative_model_classes`.
"""

from __future__ import annotations

import torch

MAX_NEW = 6


class GenerationTesterMixin:
    all_generative_model_classes = ()

    # ---------------------------------------------------------------------------------------- helpers

    def _models(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_generative_model_classes:
            torch.manual_seed(0)
            yield model_class(config).eval(), config, inputs

    @staticmethod
    def _text_prompt(inputs: dict, config) -> dict:
        """The tester's prompt without its audio: slots become ordinary ids, so rows can be padded and embedded."""
        ids = inputs["input_ids"].clone()
        ids[ids == config.audio_token_id] = 7
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    @staticmethod
    def _answer(sequences: torch.Tensor, prompt_length: int, aeos: int) -> list[list[int]]:
        """Each row's answer up to and including its first end-of-answer token."""
        rows = []
        for row in sequences[:, prompt_length:].tolist():
            rows.append(row[: row.index(aeos) + 1] if aeos in row else row)
        return rows

    def _banned(self, config) -> list[int]:
        # Forced or padding tokens are never a next-token choice (`streams.build_assistant_streams` gives no loss).
        return [t for t in (config.assistant_bos_token_id, config.text_pad_token_id, config.audio_token_id) if t is not None]

    # ---------------------------------------------------------------------------------------- tests

    def test_greedy_generate_matches_one_full_forward(self):
        for model, config, inputs in self._models():
            with torch.no_grad():
                out = model.generate(**inputs, generation_mode="text", max_new_tokens=MAX_NEW)
                prompt_length = inputs["input_ids"].shape[1]
                sequences = out.sequences
                self.assertTrue(torch.equal(sequences[:, :prompt_length], inputs["input_ids"]))
                self.assertTrue(bool((sequences[:, prompt_length] == config.assistant_bos_token_id).all()))
                # The cached step-by-step loop must pick what one uncached pass over the finished text picks.
                full = model(**{**inputs, "input_ids": sequences, "attention_mask": torch.ones_like(sequences)})
                logits = full.logits.float()
                logits[..., self._banned(config)] = -torch.inf
                for b, answer in enumerate(self._answer(sequences, prompt_length, config.assistant_eos_token_id)):
                    for r in range(1, len(answer)):
                        step = logits[b, prompt_length + r - 1]
                        # A near-tie may fall either way between the cached and the full pass.
                        self.assertGreaterEqual(float(step[answer[r]]), float(step.max()) - 1e-4, (b, r))

    def test_sample_generate_is_reproducible_and_top_k_1_is_greedy(self):
        for model, config, inputs in self._models():
            with torch.no_grad():
                first = model.generate(**inputs, do_sample=True, temperature=1.5, seed=3, max_new_tokens=MAX_NEW)
                again = model.generate(**inputs, do_sample=True, temperature=1.5, seed=3, max_new_tokens=MAX_NEW)
                greedy = model.generate(**inputs, max_new_tokens=MAX_NEW)
                top1 = model.generate(**inputs, do_sample=True, top_k=1, seed=5, max_new_tokens=MAX_NEW)
            self.assertTrue(torch.equal(first.sequences, again.sequences))
            self.assertTrue(torch.equal(top1.sequences, greedy.sequences))

    def test_generate_dict_outputs_describe_each_step(self):
        for model, config, inputs in self._models():
            model.set_attn_implementation("eager")  # attention weights are an eager-attention output
            with torch.no_grad():
                out = model.generate(
                    **inputs, max_new_tokens=MAX_NEW, min_new_tokens=MAX_NEW, return_dict_in_generate=True,
                    output_scores=True, output_logits=True, output_hidden_states=True, output_attentions=True,
                )
            prompt_length = inputs["input_ids"].shape[1]
            steps = out.sequences.shape[1] - prompt_length
            self.assertEqual(steps, MAX_NEW)
            batch, vocab = inputs["input_ids"].shape[0], config.text_config.vocab_size
            for name in ("scores", "logits"):
                per_step = getattr(out, name)
                self.assertIsInstance(per_step, tuple, name)
                self.assertEqual(len(per_step), steps, name)
                self.assertTrue(all(t.shape == (batch, vocab) for t in per_step), name)
            for r in range(1, steps):  # row 0 is the forced answer start
                self.assertTrue(torch.equal(out.scores[r].argmax(-1), out.sequences[:, prompt_length + r]), r)
            layers = config.text_config.num_hidden_layers
            self.assertEqual(len(out.hidden_states), steps)
            self.assertEqual(len(out.attentions), steps)
            for r, (states, attentions) in enumerate(zip(out.hidden_states, out.attentions)):
                length = prompt_length if r == 0 else 1  # the prompt's pass first, then one row per step
                self.assertEqual(len(states), layers + 1)
                self.assertEqual(len(attentions), layers)
                self.assertTrue(all(s.shape == (batch, length, config.text_config.hidden_size) for s in states))
                self.assertTrue(all(a.shape[0] == batch and a.shape[-2] == length for a in attentions))

    def test_min_new_tokens_holds_the_end_back(self):
        class PreferEnd:  # makes the end of the answer the top choice at every step
            def __init__(self, token: int):
                self.token = token

            def __call__(self, input_ids, scores):
                scores = scores.clone()
                scores[:, self.token] += 1e4  # additive: a token another processor banned (-inf) stays banned
                return scores

        for model, config, inputs in self._models():
            aeos = config.assistant_eos_token_id
            prompt_length = inputs["input_ids"].shape[1]
            with torch.no_grad():
                eager = model.generate(**inputs, max_new_tokens=MAX_NEW, logits_processor=[PreferEnd(aeos)])
                held = model.generate(**inputs, max_new_tokens=MAX_NEW, min_new_tokens=3,
                                      logits_processor=[PreferEnd(aeos)])
            self.assertTrue(bool((eager.sequences[:, prompt_length + 1] == aeos).all()))
            answer = held.sequences[:, prompt_length:]
            self.assertFalse(bool((answer[:, :3] == aeos).any()))
            self.assertTrue(bool((answer[:, 3] == aeos).all()))

    def test_bad_words_ids_are_never_generated_and_max_new_tokens_is_the_length(self):
        for model, config, inputs in self._models():
            prompt_length = inputs["input_ids"].shape[1]
            with torch.no_grad():
                greedy = model.generate(**inputs, max_new_tokens=MAX_NEW)
                chosen = {t for row in greedy.sequences[:, prompt_length + 1 :].tolist() for t in row}
                banned = sorted(chosen | {config.assistant_eos_token_id})
                out = model.generate(**inputs, max_new_tokens=MAX_NEW, bad_words_ids=[[t] for t in banned])
            self.assertEqual(out.sequences.shape[1], prompt_length + MAX_NEW)  # the end is banned: all steps run
            answer = out.sequences[:, prompt_length + 1 :]
            self.assertFalse(bool(torch.isin(answer, torch.tensor(banned)).any()), banned)

    def test_generate_from_inputs_embeds_matches_input_ids(self):
        for model, config, inputs in self._models():
            prompt = self._text_prompt(inputs, config)
            with torch.no_grad():
                from_ids = model.generate(**prompt, max_new_tokens=MAX_NEW)
                embeds = model.get_input_embeddings()(prompt["input_ids"])
                from_embeds = model.generate(inputs_embeds=embeds, attention_mask=prompt["attention_mask"],
                                             max_new_tokens=MAX_NEW)
            # As transformers' decoder-only models: from embeddings, `sequences` holds the new tokens only.
            prompt_length = prompt["input_ids"].shape[1]
            self.assertTrue(torch.equal(from_embeds.sequences, from_ids.sequences[:, prompt_length:]))

    def test_left_padding_compatibility(self):
        for model, config, inputs in self._models():
            prompt = self._text_prompt(inputs, config)
            ids = prompt["input_ids"][:2]
            short = ids[0, 3:]  # row 0 loses its first 3 tokens and is left-padded to row 1's length
            padded = ids.clone()
            padded[0] = torch.cat([torch.full((3,), 0), short])
            mask = torch.ones_like(padded)
            mask[0, :3] = 0
            with torch.no_grad():
                batched = model.generate(input_ids=padded, attention_mask=mask, max_new_tokens=MAX_NEW)
                alone = model.generate(input_ids=short[None], max_new_tokens=MAX_NEW)
            width = alone.sequences.shape[1] - short.shape[0]
            self.assertTrue(torch.equal(batched.sequences[0, ids.shape[1] : ids.shape[1] + width],
                                        alone.sequences[0, short.shape[0] :]))
