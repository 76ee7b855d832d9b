"""Pieces shared by the project's `transformers.Trainer` subclasses (SFT and codec training).

Kept free of TRL so that codec training needs only `transformers`.
"""

from __future__ import annotations

import torch


class LossOnlyPredictionMixin:
    """Evaluation through `compute_loss` (so eval logs the loss components too); no logits are gathered."""

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None


__all__ = ["LossOnlyPredictionMixin"]
