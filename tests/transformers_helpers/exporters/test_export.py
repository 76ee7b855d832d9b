"""`ExportTesterMixin` for the sdist's `test_modeling_common.py` (written for OmniDRCA; see ../README.md).

`ModelTesterMixin` inherits from this mixin, whose module transformers keeps out of the sdist. The check here is
the one a user of `torch.export` relies on: the model's forward, audio included, exports as one graph (no
data-dependent Python branches) and the exported program computes what the eager model computes.
"""

from __future__ import annotations

import torch


class ExportTesterMixin:
    test_torch_exportable = True

    def test_torch_export_matches_eager(self):
        if not self.test_torch_exportable:
            self.skipTest(f"{type(self).__name__} sets test_torch_exportable = False")
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        inputs = {**inputs, "use_cache": False}  # a cache object is not a tensor output
        for model_class in self.all_model_classes:
            torch.manual_seed(0)
            model = model_class(config).eval()
            with torch.no_grad():
                eager = model(**inputs)
                program = torch.export.export(model, args=(), kwargs=inputs, strict=False)
                exported = program.module()(**inputs)
            torch.testing.assert_close(exported.logits, eager.logits, rtol=1e-5, atol=1e-5)
            # A second batch of other values through the same program: the graph holds no baked-in data.
            other = {k: (v.flip(0) if torch.is_tensor(v) else v) for k, v in inputs.items()}
            with torch.no_grad():
                torch.testing.assert_close(program.module()(**other).logits, model(**other).logits, rtol=1e-5, atol=1e-5)
