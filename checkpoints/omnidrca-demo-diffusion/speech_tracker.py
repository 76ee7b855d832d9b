"""The speech tracker: where the answer's speech has got to, for the SRH (`config.speech_tracker_layers > 0`).

The SRH says the next group from one 5 Hz backbone state. That state knows the text written so far, and, when the
backbone reads the speech stream, how far the speech has got. With `speech_read="after_text"` the backbone reads no
speech while the text is written (so the text is chosen as in a text-only answer), and the SRH loses its place in
the sentence. The tracker gives it back without touching the text stream: a small causal transformer runs over the
answer's rows, each row the text token and the speech group of that row (both embedded by the model's own frozen
embeddings), and its state at row t is added to the SRH's conditioning of group t+1.

```
 answer rows 0..t:  E_text(x_0..t) + Group(E_speech(s_0..t)) ─► in_proj ─► causal transformer ─► out_proj ─► (k·Ds)
 SRH condition of group t+1 = ungroup(h_t) + tracker_t                       (out_proj starts at zero)
```

The tracker sees only the current answer: training gathers the rows from each sequence's last `<abos>`,
generation the rows each session row has made since it joined. It keeps no cache: at 5 Hz an answer is tens of
rows, and rerunning a small transformer over them each step keeps rows free to join and leave a session.

Shape legend: B batch, L positions, R answer rows, k group size, D backbone width, Dr tracker width (= SRH width),
Ds SRH width.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel

MAX_ANSWER_ROWS = 4096  # rotary positions; an answer of 4,096 rows is 13 minutes at 5 Hz


class OmniDRCASpeechTracker(nn.Module):
    """A small causal transformer over the answer's (text token, speech group) rows -> (k·Ds) SRH conditioning."""

    def __init__(self, config):
        super().__init__()
        srh = config.srh_config
        body = type(srh).from_dict({**srh.to_dict(), "num_hidden_layers": config.speech_tracker_layers,
                                    "max_position_embeddings": MAX_ANSWER_ROWS, "vocab_size": 1,
                                    "layer_types": None})
        self.in_proj = nn.Linear(config.text_config.hidden_size, srh.hidden_size, bias=False)
        self.body = AutoModel.from_config(body)  # reads inputs_embeds; its one-row token table is unused
        self.out_proj = nn.Linear(srh.hidden_size, config.group_size * srh.hidden_size)

    def forward(self, row_embeds: torch.Tensor) -> torch.Tensor:
        """(B, R, D) answer rows, left-aligned (padding after them only) -> (B, R, k·Ds) conditioning."""
        out = self.body(inputs_embeds=self.in_proj(row_embeds), use_cache=False, return_dict=True)
        return self.out_proj(out.last_hidden_state)

    def track(self, text_ids: torch.LongTensor, speech_ids: torch.LongTensor, start: torch.LongTensor,
              text_embed: nn.Module, speech_embed: nn.Module) -> torch.Tensor:
        """The conditioning at every position from `start` on (zero before it).

        Args:
            text_ids: (B, L) text stream; speech_ids: (B, L, k) speech stream, as the backbone would read it ungated.
            start: (B,) each row's first answer position (L: no answer).
            text_embed / speech_embed: the model's token embedding and `Group(E_speech)`.
        Returns:
            (B, L, k·Ds).
        """
        batch, length = text_ids.shape
        rows = int((length - start).clamp(min=0).max()) if batch else 0
        out = self.out_proj.weight.new_zeros(batch, length, self.out_proj.out_features)
        if rows == 0:
            return out
        index = start[:, None] + torch.arange(rows, device=start.device)  # (B, R) positions of each answer row
        valid = index < length
        index = index.clamp(max=length - 1)
        text = text_ids.gather(1, index)  # (B, R)
        speech = speech_ids.gather(1, index[..., None].expand(-1, -1, speech_ids.shape[-1]))  # (B, R, k)
        embeds = text_embed(text) + speech_embed(speech).to(text_embed.weight.dtype)  # (B, R, D)
        tracked = self(embeds.to(self.in_proj.weight.dtype))  # (B, R, k·Ds)
        batch_index = torch.arange(batch, device=start.device)[:, None].expand_as(index)
        out[batch_index[valid], index[valid]] = tracked[valid].to(out.dtype)
        return out


def answer_starts(text_ids: torch.LongTensor, assistant_bos_token_id: int) -> torch.LongTensor:
    """(B, L) text stream -> (B,) position of each row's last `<abos>` (L where it has none)."""
    length = text_ids.shape[1]
    is_bos = text_ids == assistant_bos_token_id
    positions = torch.arange(length, device=text_ids.device).expand_as(text_ids)
    last = torch.where(is_bos, positions, -1).max(dim=1).values
    return torch.where(last >= 0, last, length)


def attach_speech_tracker(model, layers: int) -> OmniDRCASpeechTracker:
    """Give a trained SRH model a fresh tracker of `layers` layers (it says the same speech until trained: the
    output projection starts at zero). The config records it, so the saved model loads with its tracker."""
    if getattr(model.speech_head, "tracker", None) is not None:
        raise ValueError(f"The model already has a speech tracker ({model.config.speech_tracker_layers} layers); "
                         "train it as it is, or load a model without one.")
    model.config.speech_tracker_layers = layers
    model.config.validate_omnidrca()
    reference = next(model.speech_head.parameters())
    tracker = OmniDRCASpeechTracker(model.config).to(reference.device, reference.dtype)
    tracker.apply(model._init_weights)
    nn.init.zeros_(tracker.out_proj.weight)
    nn.init.zeros_(tracker.out_proj.bias)
    model.speech_head.tracker = tracker
    return tracker


__all__ = ["OmniDRCASpeechTracker", "answer_starts", "attach_speech_tracker"]
