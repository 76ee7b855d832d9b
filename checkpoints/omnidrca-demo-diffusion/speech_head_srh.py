"""The Speech Refined Head (SRH): discrete 25 Hz codec codes from one 5 Hz backbone state (`speech_head_type="srh"`).

Dual resolution, both sides of the backbone: `OmniDRCASpeechEmbedding` groups k speech tokens into one backbone
input; `OmniDRCASpeechRefinedHead` ungroups one backbone state into k tokens with a small causal LM over the
group (teacher-forced in training, k KV-cached steps at generation).

Shape legend: B batch, L LLM positions, k group size, D backbone width, Ds SRH width, Vs speech vocabulary
(codes + bos/eos/pad), P target groups in training, n active rows at generation, h speech history length.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel
from transformers.cache_utils import DynamicCache
from transformers.generation.logits_process import LogitsProcessorList

from .generation_settings import choose_tokens
from .speech_heads import SpeechGroup, SpeechHeadLoss, register_speech_head
from .speech_tracker import OmniDRCASpeechTracker, answer_starts
from .streams import IGNORE_INDEX, srh_previous_ids


class OmniDRCASpeechEmbedding(nn.Module):
    """Group(E_speech(s_t,1..k)): embeds the k tokens of a group and projects their concatenation to D.

    The pad token embeds to zero and the projection has no bias, so an all-pad group adds nothing:
    prompt and text-only positions are plain text-LLM positions.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config  # read at each training step: `speech_input_noise` may be changed after loading
        self.group_size = config.group_size
        dim = config.srh_config.hidden_size
        self.embed_tokens = nn.Embedding(config.speech_embed_vocab_size, dim, padding_idx=config.speech_pad_token_id)
        self.proj = nn.Linear(self.group_size * dim, config.text_config.hidden_size, bias=False)

    def forward(self, speech_ids: torch.LongTensor, speech_latents: torch.Tensor | None = None) -> torch.Tensor:
        if speech_latents is not None:
            raise ValueError(
                "`speech_latents` are the continuous speech stream of speech_head_type='diffusion'; this model's "
                "speech head is 'srh' and reads discrete `speech_ids` only. Drop them."
            )
        if self.training and self.config.speech_input_noise > 0:
            # One rate per row, uniform up to the setting: every batch mixes clean and badly noised rows.
            rate = torch.rand(speech_ids.shape[0], 1, 1, device=speech_ids.device) * self.config.speech_input_noise
            speech_ids = swap_random_codes(speech_ids, rate, self.config.speech_vocab_size)
        embeds = self.embed_tokens(speech_ids)  # (B, L, k, Ds)
        return self.proj(embeds.flatten(-2))  # (B, L, k·Ds) -> (B, L, D)


def swap_random_codes(speech_ids: torch.LongTensor, rate: float | torch.Tensor, num_codes: int,
                      generator: torch.Generator | None = None) -> torch.LongTensor:
    """Each codec code of `speech_ids` (ids < `num_codes`; specials stay) swapped for a uniformly random code with
    probability `rate`: a float, or a tensor that broadcasts against `speech_ids` (one rate per row)."""
    device = speech_ids.device
    swap = (torch.rand(speech_ids.shape, device=device, generator=generator) < rate) & (speech_ids < num_codes)
    codes = torch.randint(0, num_codes, speech_ids.shape, device=device, generator=generator)
    return torch.where(swap, codes, speech_ids)


@register_speech_head("srh")
class OmniDRCASpeechRefinedHead(nn.Module):
    """Dual resolution, output side: ungroups one LLM state into k 25 Hz speech-token distributions.

    A linear layer splits the state into k conditioning vectors; each is added to the embedding of the
    previous speech token and a small causal LM (`decoder`) runs over the k positions of the group.
    Attention stays inside the group, so generation needs only a k-long KV cache per LLM step. With
    `config.speech_tracker_layers > 0` a `tracker` (speech_tracker.py) adds where the answer's speech has got to.
    """

    embedding_class = OmniDRCASpeechEmbedding
    continuous = False  # the speech stream carries codec codes only

    def __init__(self, config):
        super().__init__()
        self.group_size = config.group_size
        self.hidden_size = config.srh_config.hidden_size
        self.pad_id, self.eos_id = config.speech_pad_token_id, config.speech_eos_token_id
        self.ungroup = nn.Linear(config.text_config.hidden_size, self.group_size * self.hidden_size)
        self.decoder = AutoModel.from_config(config.srh_config)  # its embed_tokens embeds speech tokens
        self.lm_head = nn.Linear(self.hidden_size, config.speech_embed_vocab_size, bias=False)
        self.abos = config.assistant_bos_token_id
        self.tracker = OmniDRCASpeechTracker(config) if config.speech_tracker_layers else None

    @property
    def reads_text(self) -> bool:
        """A tracker reads the answer's text ids: the model passes them to `loss` (see speech_heads.py)."""
        return self.tracker is not None

    def condition(self, hidden_states: torch.Tensor, tracked: torch.Tensor | None = None) -> torch.Tensor:
        """(P, D) LLM states [+ (P, k·Ds) tracker states] -> (P, k, Ds) per-position conditioning vectors."""
        condition = self.ungroup(hidden_states)
        if tracked is not None:
            condition = condition + tracked.to(condition.dtype)
        return condition.view(-1, self.group_size, self.hidden_size)

    def track(self, text_ids: torch.LongTensor | None, speech_ids: torch.LongTensor, start: torch.LongTensor | None,
              text_embed: nn.Module | None, speech_embed: nn.Module | None) -> torch.Tensor | None:
        """The tracker's (B, L, k·Ds) states over the answers of (B, L) `text_ids` (None without a tracker)."""
        if self.tracker is None:
            return None
        if text_ids is None or text_embed is None or speech_embed is None:
            raise ValueError("This SRH has a speech tracker, which reads the answer's text ids beside its speech: pass "
                             "`input_ids` (not `inputs_embeds`) with `speech_labels`.")
        start = answer_starts(text_ids, self.abos) if start is None else start
        return self.tracker.track(text_ids, speech_ids, start, text_embed, speech_embed)

    def forward(self, hidden_states: torch.Tensor, previous_ids: torch.LongTensor,
                tracked: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits of the next group.

        Args:
            hidden_states: (P, D) LLM states, one per target group.
            previous_ids: (P, k) the 25 Hz token before each target (see `streams.srh_previous_ids`).
            tracked: (P, k·Ds) the tracker's state at the same rows (models with a tracker).
        Returns:
            (P, k, Vs) logits.
        """
        inputs = self.condition(hidden_states, tracked) + self.decoder.embed_tokens(previous_ids)  # (P, k, Ds)
        out = self.decoder(inputs_embeds=inputs, use_cache=False, return_dict=True)
        return self.lm_head(out.last_hidden_state)  # (P, k, Vs)

    def loss(self, hidden: torch.Tensor, speech_ids: torch.LongTensor, speech_labels: torch.LongTensor,
             speech_latents: torch.Tensor | None = None, embed: nn.Module | None = None,
             text_ids: torch.LongTensor | None = None, text_embed: nn.Module | None = None) -> SpeechHeadLoss:
        """SRH CE: the state of row t predicts group t+1, teacher-forced on the speech stream."""
        targets = speech_labels[:, 1:].to(hidden.device)  # (B, L-1, k)
        selected = (targets != IGNORE_INDEX).any(-1)  # (B, L-1) rows that carry a speech target
        if not bool(selected.any()):
            return SpeechHeadLoss(hidden.sum() * 0.0)
        speech_ids = speech_ids.to(hidden.device)
        previous = srh_previous_ids(speech_ids)[selected]  # (P, k)
        tracked = self.track(text_ids, speech_ids, None, text_embed, embed)  # (B, L, k·Ds) or None
        logits = self(hidden[:, :-1][selected], previous, None if tracked is None else tracked[:, :-1][selected])
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets[selected].flatten(), ignore_index=IGNORE_INDEX)
        return SpeechHeadLoss(loss, logits=logits)

    def generate_group(
        self,
        hidden: torch.Tensor,
        previous: torch.LongTensor,
        history: torch.LongTensor,
        banned: list[int],
        processors: LogitsProcessorList,
        do_sample: bool,
        generator: torch.Generator | None,
        tracked: torch.Tensor | None = None,
    ) -> tuple[torch.LongTensor, torch.Tensor]:
        """k autoregressive SRH steps for n rows on a k-long KV cache.

        Args:
            hidden: (n, D) backbone states; previous: (n,) the token before the group; history: (n, h);
            tracked: (n, k·Ds) the tracker's states (models with a tracker).
        Returns:
            (n, k) tokens ([pad] after an [eos]) and their (n, k, Vs) raw logits.
        """
        conditions = self.condition(hidden, tracked)  # (n, k, Ds)
        cache = DynamicCache(config=self.decoder.config)
        tokens, logits_out = [], []
        ended = torch.zeros_like(previous, dtype=torch.bool)
        token = previous
        for j in range(self.group_size):
            inputs = conditions[:, j : j + 1] + self.decoder.embed_tokens(token[:, None])  # (n, 1, Ds)
            out = self.decoder(inputs_embeds=inputs, cache=cache, use_cache=True)
            logits = self.lm_head(out.last_hidden_state[:, -1]).float()  # (n, Vs)
            logits_out.append(logits)
            masked = logits.clone()
            masked[:, banned] = -math.inf
            token, _ = choose_tokens(masked, history, processors, do_sample, generator)
            token = token.masked_fill(ended, self.pad_id)
            ended |= token == self.eos_id
            tokens.append(token)
            history = torch.cat([history, token[:, None]], dim=1)
        return torch.stack(tokens, dim=1), torch.stack(logits_out, dim=1)  # (n, k), (n, k, Vs)

    def start_generation(self, model, settings, device: torch.device) -> SRHGeneration:
        return SRHGeneration(model, settings, device)


def hidden_zeros(head: OmniDRCASpeechRefinedHead, batch: int, device: torch.device) -> torch.Tensor:
    out = head.tracker.out_proj
    return out.weight.new_zeros(batch, out.out_features, device=device)


class SRHGeneration:
    """The SRH's per-generation state: sampling settings of the speech stream; each group is k SRH steps."""

    latent_dim = None  # discrete: the speech stream carries ids only
    snap_to_codebook = False

    def __init__(self, model, settings, device: torch.device):
        cfg = model.config
        self.model, self.head, self.settings, self.device = model, model.speech_head, settings, device
        self.k, self.pad = cfg.group_size, cfg.speech_pad_token_id
        self.vocab = cfg.speech_embed_vocab_size
        self.banned = cfg.stream_layout.speech_never_sampled  # the delay's [bos] and [pad]
        self.reads_text = self.head.reads_text  # the session then passes `text_history` and `start`

    def next_group(self, hidden: torch.Tensor, speech_history: torch.LongTensor, latent_history, active,
                   text_history: torch.LongTensor | None = None, start: torch.LongTensor | None = None) -> SpeechGroup:
        """The next (B, k) group for the `active` rows from their (B, D) states; `[pad]` elsewhere.

        `text_history` (B, H) and `start` (B,), the step each row joined at, are read by a speech tracker only.
        """
        s, batch = self.settings, hidden.shape[0]
        group = torch.full((batch, self.k), self.pad, dtype=torch.long, device=self.device)
        logits = torch.full((batch, self.k, self.vocab), math.nan, device=self.device) if s.output_logits else None
        if bool(active.any()):
            previous = speech_history[:, -1] if speech_history.shape[1] else group[:, 0]
            histories = (speech_history, text_history, start)
            tracked = self._tracked(*(None if x is None else x[active] for x in histories))  # (A, k·Ds) or None
            codes, srh_logits = self.head.generate_group(
                hidden[active], previous[active], speech_history[active], self.banned,
                s.speech_processors, s.speech.do_sample, s.generator, tracked,
            )
            group[active] = codes
            if logits is not None:
                logits[active] = srh_logits
        return SpeechGroup(group, None, logits)

    def _tracked(self, speech_history, text_history, start) -> torch.Tensor | None:
        """(A, k·Ds) the tracker's state at each given row's last answer row (None without a tracker); the session
        passes only the active rows, so rows that finished speaking cost nothing."""
        if self.head.tracker is None:
            return None
        if text_history is None or start is None:
            raise ValueError("This SRH has a speech tracker: `next_group` needs the session's `text_history` and "
                             "`start` (GenerationSession passes them).")
        rows = speech_history.shape[1] // self.k  # answer rows made so far, text and speech aligned
        if rows == 0:  # the first group (no speech delay) follows the prompt, where the tracker reads nothing
            return hidden_zeros(self.head, speech_history.shape[0], speech_history.device)
        text = text_history[:, text_history.shape[1] - rows:]  # (B, R)
        speech = speech_history.view(-1, rows, self.k)  # (B, R, k)
        tracked = self.head.track(text, speech, start, self.model.get_input_embeddings(), self.model.model.speech_embed)
        return tracked[:, -1]  # (B, k·Ds)

    def decode(self, speech_ids: torch.LongTensor, speech_latents, lengths: torch.LongTensor):
        """(B, T) speech stream and (B,) code counts -> (B, samples) waveform and (B,) sample counts."""
        return self.model._decode_waveform(speech_ids, lengths)


__all__ = ["OmniDRCASpeechEmbedding", "OmniDRCASpeechRefinedHead", "SRHGeneration"]
