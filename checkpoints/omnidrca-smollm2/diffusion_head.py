"""The diffusion speech head: continuous speech tokens from a small diffusion transformer.

The bi-level "whole-part" model of the second source document: the backbone (the "whole") runs at 5 Hz;
from its state h_t a small DiT (the "part") generates the k continuous codec latent frames of the next
group, conditioned also on the previous group's latents. h_t conditions the DiT twice: through adaLN (shift,
scale and gate of every block, with the flow time) and, like the SRH's `ungroup`, as one projected vector per
frame added to that frame's token, so each of the k frames reads its own part of the state. Flow matching
(rectified flow):

    x_t = (1 - t)·x0 + t·x1,   x0 ~ N(0, I) noise,   x1 = the group's normalised latents,   t in [0, 1]
    the DiT predicts the velocity v = x1 - x0 (MSE); generation integrates dx/dt = v from t=0 to t=1
    with `num_ode_steps` Euler or Heun steps, optionally with classifier-free guidance.

A stop head on h_t predicts how many frames of the next group are speech: k means "a full group, go on";
n < k means n frames, then the speech stream's `[eos]` (the discrete layout of `streams.py`, unchanged).

On the input side, `OmniDRCAContinuousSpeechEmbedding` replaces the discrete group embedding: each frame is
its normalised latent (zero where the stream holds no frame) next to a small learned vector for `[bos]` /
`[eos]` (`[pad]` is zero), and an MLP without biases projects the k frames of a group to one backbone input
(an all-pad group still adds exactly zero). It also holds the latents' per-dimension mean and std (computed
over a training corpus, saved with the checkpoint) and does the (de)normalisation for the whole model.

Shape legend:
    B  batch        L  LLM positions      k  group size        d  codec latent dim
    n  groups the head runs on (P target groups in training, active rows at generation)
    H  DiT width    D  backbone width     I  DiT MLP width     E  special-token vector size
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init

from .speech_heads import SpeechGroup, SpeechHeadLoss, register_speech_head
from .streams import IGNORE_INDEX


def timestep_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(n,) flow times in [0, 1] -> (n, dim) sinusoidal features (DiT's, on t·1000)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]  # (n, dim/2)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: (n, S, H) normalised tokens, (n, H) shift and scale from the condition."""
    return x * (1 + scale[:, None]) + shift[:, None]


class OmniDRCAZeroInitLinear(nn.Linear):
    """A linear layer that the model's `_init_weights` sets to zero (adaLN-Zero modulations, the velocity
    output, the per-frame conditioning): also when it is missing from a loaded checkpoint."""

    def _init_own_weights(self, std: float) -> None:
        # adaLN-Zero (DiT): every block starts as the identity, the head at zero velocity.
        init.zeros_(self.weight)
        init.zeros_(self.bias)


class OmniDRCAContinuousSpeechEmbedding(nn.Module):
    """Group(frames) for continuous speech: the k frames of a group (latents or special tokens) -> one D vector."""

    def __init__(self, config):
        super().__init__()
        self.group_size = config.group_size
        self.latent_dim = config.codec_config.latent_dim
        self.speech_vocab_size = config.speech_vocab_size
        dc = config.diffusion_config
        self.special_ids = (config.speech_bos_token_id, config.speech_eos_token_id)
        # Rows: 0 = [bos], 1 = [eos], 2 = no special token (a latent frame or [pad]), kept at zero.
        self.special = nn.Embedding(3, dc.special_embedding_size, padding_idx=2)
        frame = self.latent_dim + dc.special_embedding_size
        self.proj_in = nn.Linear(self.group_size * frame, dc.hidden_size, bias=False)
        self.act = nn.GELU()
        self.proj_out = nn.Linear(dc.hidden_size, config.text_config.hidden_size, bias=False)
        # Per-dimension statistics of the codec's continuous latents (OmniDRCAForConditionalGeneration.
        # set_speech_latent_stats); identity until set.
        self.register_buffer("latent_mean", torch.zeros(self.latent_dim))
        self.register_buffer("latent_std", torch.ones(self.latent_dim))

    def _init_own_weights(self, std: float) -> None:
        init.zeros_(self.latent_mean)
        init.ones_(self.latent_std)

    def normalize(self, latents: torch.Tensor) -> torch.Tensor:
        """(..., d) codec latents -> (..., d) zero-mean unit-std latents (what the DiT models)."""
        return (latents - self.latent_mean.to(latents.dtype)) / self.latent_std.to(latents.dtype)

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of `normalize`."""
        return latents * self.latent_std.to(latents.dtype) + self.latent_mean.to(latents.dtype)

    def frame_mask(self, speech_ids: torch.LongTensor) -> torch.BoolTensor:
        """(..., k) ids -> (..., k) True where the stream holds a latent frame (a codec-code position)."""
        return (speech_ids >= 0) & (speech_ids < self.speech_vocab_size)

    def forward(self, speech_ids: torch.LongTensor, speech_latents: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L, k) ids and (B, L, k, d) codec latents (ignored where the ids are not frames) -> (B, L, D)."""
        bos, eos = self.special_ids
        is_frame = self.frame_mask(speech_ids)  # (B, L, k)
        if speech_latents is None:
            if bool(is_frame.any()):
                raise ValueError(
                    "The diffusion head's speech stream is continuous: `speech_ids` mark latent frames, so pass "
                    "their codec latents as `speech_latents` (batch, seq_len, group_size, latent_dim) "
                    "(`processor.build_training_batch` does when the examples carry `answer_latents`)."
                )
            frames = torch.zeros(*speech_ids.shape, self.latent_dim, device=speech_ids.device)
        else:
            if speech_latents.shape != (*speech_ids.shape, self.latent_dim):
                raise ValueError(
                    f"`speech_latents` must have shape (batch, seq_len, group_size, latent_dim) = "
                    f"{(*speech_ids.shape, self.latent_dim)} like `speech_ids` plus the codec's latent dim, got "
                    f"{tuple(speech_latents.shape)}."
                )
            frames = self.normalize(speech_latents.float()) * is_frame[..., None]  # (B, L, k, d)
        index = torch.full_like(speech_ids, 2)
        index = index.masked_fill(speech_ids == bos, 0).masked_fill(speech_ids == eos, 1)
        dtype = self.proj_in.weight.dtype
        features = torch.cat([frames.to(dtype), self.special(index)], dim=-1)  # (B, L, k, d + E)
        return self.proj_out(self.act(self.proj_in(features.flatten(-2))))  # (B, L, k·(d+E)) -> (B, L, D)


class OmniDRCADiTBlock(nn.Module):
    """DiT block with adaLN-Zero: the condition sets shift/scale/gate of the attention and MLP sublayers."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.modulation = OmniDRCAZeroInitLinear(hidden_size, 6 * hidden_size)  # zero-initialised: each block starts as identity

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """x: (n, S, H) tokens; c: (n, H) condition (backbone state + flow time)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(c)).chunk(6, dim=-1)  # each (n, H)
        n, s, h = x.shape
        qkv = self.qkv(modulate(self.norm1(x), shift1, scale1))  # (n, S, 3H)
        q, k, v = qkv.view(n, s, 3, self.num_heads, h // self.num_heads).permute(2, 0, 3, 1, 4)  # each (n, heads, S, H/heads)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, s, h)  # bidirectional in the group
        x = x + gate1[:, None] * self.proj(attn)
        x = x + gate2[:, None] * self.fc2(self.act(self.fc1(modulate(self.norm2(x), shift2, scale2))))
        return x


@register_speech_head("diffusion")
class OmniDRCADiffusionHead(nn.Module):
    """The "part" model: backbone state -> the k continuous latent frames of the next group, by flow matching.

    `forward` is one DiT evaluation (the unit of generation cost); `sample` integrates the flow ODE and
    `flow_matching_loss` is the training objective. Latents here are normalised (see
    `OmniDRCAContinuousSpeechEmbedding.normalize`).
    """

    embedding_class = OmniDRCAContinuousSpeechEmbedding
    continuous = True  # the speech stream carries the frames' codec latents next to their codes

    def __init__(self, config):
        super().__init__()
        dc = config.diffusion_config
        self.config = dc
        self.eos_id = config.speech_eos_token_id
        self.group_size = k = config.group_size
        self.latent_dim = d = config.codec_config.latent_dim
        hidden, width = dc.hidden_size, config.text_config.hidden_size
        self.stop_head = nn.Linear(width, k + 1)  # frames of speech in the next group; k = all, go on
        self.condition = nn.Linear(width, hidden)
        # Per-frame conditioning, as the SRH's `ungroup`: h_t split into one vector per frame of the group and
        # added to that frame's token (adaLN alone gives every frame the same condition). Zero-initialised.
        self.frame_condition = OmniDRCAZeroInitLinear(width, k * hidden)
        self.null_condition = nn.Parameter(torch.zeros(hidden))  # classifier-free guidance's "no backbone state"
        self.time_embed = nn.Sequential(
            nn.Linear(dc.frequency_embedding_size, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
        )
        self.noisy_in = nn.Linear(d, hidden)
        self.previous_in = nn.Linear(d, hidden)
        self.previous_absent = nn.Parameter(torch.zeros(hidden))  # a previous frame that is not speech
        self.positions = nn.Parameter(torch.zeros(2 * k, hidden))  # previous group's k frames, then the k noisy ones
        self.blocks = nn.ModuleList(
            OmniDRCADiTBlock(hidden, dc.num_attention_heads, dc.intermediate_size) for _ in range(dc.num_hidden_layers)
        )
        self.final_norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.final_modulation = OmniDRCAZeroInitLinear(hidden, 2 * hidden)
        self.out = OmniDRCAZeroInitLinear(hidden, d)  # the untrained head predicts zero velocity

    def forward(
        self,
        noisy: torch.Tensor,
        t: torch.Tensor,
        condition: torch.Tensor,
        frame_condition: torch.Tensor,
        previous: torch.Tensor,
        previous_mask: torch.BoolTensor,
    ) -> torch.Tensor:
        """One DiT evaluation: the predicted velocity.

        Args:
            noisy: (n, k, d) x_t. t: (n,) flow times.
            condition: (n, H) projected backbone states (`self.condition(h)`) or the null condition.
            frame_condition: (n, k, H) per-frame projections of the states (zero for the null condition).
            previous: (n, k, d) the previous group's normalised latents; previous_mask: (n, k) True on frames.
        Returns:
            (n, k, d) velocity.
        """
        dtype = self.noisy_in.weight.dtype
        c = condition + self.time_embed(timestep_features(t, self.config.frequency_embedding_size).to(dtype))  # (n, H)
        prev = self.previous_in(previous.to(dtype))  # (n, k, H)
        prev = torch.where(previous_mask[..., None], prev, self.previous_absent.to(dtype))
        current = self.noisy_in(noisy.to(dtype)) + frame_condition  # (n, k, H)
        x = torch.cat([prev, current], dim=1) + self.positions  # (n, 2k, H)
        for block in self.blocks:
            x = block(x, c)
        shift, scale = self.final_modulation(F.silu(c)).chunk(2, dim=-1)
        x = modulate(self.final_norm(x[:, self.group_size :]), shift, scale)  # (n, k, H) the noisy frames only
        return self.out(x)  # (n, k, d)

    def _init_own_weights(self, std: float) -> None:
        init.normal_(self.positions, mean=0.0, std=std)
        init.zeros_(self.null_condition)
        init.zeros_(self.previous_absent)

    def conditions(
        self, hidden_states: torch.Tensor, drop: torch.BoolTensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, D) backbone states -> (n, H) global and (n, k, H) per-frame conditions; rows in `drop` (n,)
        get the null condition (learned global vector, zero per-frame)."""
        c = self.condition(hidden_states)
        frames = self.frame_condition(hidden_states).view(-1, self.group_size, c.shape[-1])  # (n, k, H)
        if drop is not None:
            c = torch.where(drop[:, None], self.null_condition.to(c.dtype), c)
            frames = frames * ~drop[:, None, None]
        return c, frames

    def flow_matching_loss(
        self,
        hidden_states: torch.Tensor,
        target: torch.Tensor,
        target_mask: torch.BoolTensor,
        previous: torch.Tensor,
        previous_mask: torch.BoolTensor,
    ) -> torch.Tensor:
        """Rectified-flow MSE on the target frames, `timesteps_per_target` noise/time draws per group.

        Args:
            hidden_states: (P, D) backbone states; target: (P, k, d) normalised latents of the next group,
            target_mask: (P, k) True on its speech frames; previous / previous_mask as in `forward`.
        """
        cfg, reps = self.config, self.config.timesteps_per_target
        drop = None
        if self.training and cfg.condition_dropout > 0:
            drop = torch.rand(hidden_states.shape[0], device=hidden_states.device) < cfg.condition_dropout
        c, fc = self.conditions(hidden_states, drop)
        c, fc = c.repeat(reps, 1), fc.repeat(reps, 1, 1)  # (R, H), (R, k, H), R = P·reps
        x1 = target.float().repeat(reps, 1, 1)  # (R, k, d)
        x0 = torch.randn_like(x1)
        n = x1.shape[0]
        if cfg.time_sampling == "logit_normal":
            t = torch.sigmoid(torch.randn(n, device=x1.device))
        else:
            t = torch.rand(n, device=x1.device)
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * x1
        v = self(xt, t, c, fc, previous.repeat(reps, 1, 1), previous_mask.repeat(reps, 1))  # (R, k, d)
        mask = target_mask.repeat(reps, 1)[..., None].to(v.dtype)  # (R, k, 1)
        err = (v.float() - (x1 - x0)) ** 2 * mask
        return err.sum() / (mask.sum() * self.latent_dim).clamp(min=1.0)

    @torch.no_grad()
    def sample(
        self,
        hidden_states: torch.Tensor,
        previous: torch.Tensor,
        previous_mask: torch.BoolTensor,
        num_steps: int,
        solver: str = "euler",
        guidance_scale: float = 1.0,
        noise_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Integrate the flow from noise to latents: (n, D) states -> (n, k, d) normalised latents.

        DiT calls: `num_steps` (Euler) or 2·`num_steps` - 1 (Heun, last step Euler); guidance doubles the
        batch of each call, not the number of calls.
        """
        n = hidden_states.shape[0]
        x = torch.randn(n, self.group_size, self.latent_dim, generator=generator, device=hidden_states.device)
        x = x * noise_scale
        c, fc = self.conditions(hidden_states)  # (n, H), (n, k, H)
        guided = guidance_scale != 1.0
        if guided:
            c = torch.cat([c, self.null_condition.to(c.dtype).expand_as(c)])  # (2n, H)
            fc = torch.cat([fc, torch.zeros_like(fc)])  # (2n, k, H)
            previous, previous_mask = previous.repeat(2, 1, 1), previous_mask.repeat(2, 1)

        def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
            xs = x.repeat(2, 1, 1) if guided else x
            v = self(xs, torch.full((xs.shape[0],), t, device=x.device), c, fc, previous, previous_mask).float()
            if guided:
                cond, uncond = v.chunk(2)
                v = uncond + guidance_scale * (cond - uncond)
            return v  # (n, k, d)

        times = torch.linspace(0.0, 1.0, num_steps + 1).tolist()
        for i in range(num_steps):
            t0, t1 = times[i], times[i + 1]
            v0 = velocity(x, t0)
            if solver == "heun" and i < num_steps - 1:
                x_euler = x + (t1 - t0) * v0
                x = x + (t1 - t0) * (v0 + velocity(x_euler, t1)) / 2
            else:
                x = x + (t1 - t0) * v0
        return x


    def loss(self, hidden: torch.Tensor, speech_ids: torch.LongTensor, speech_labels: torch.LongTensor,
             speech_latents: torch.Tensor | None = None, embed: nn.Module | None = None) -> SpeechHeadLoss:
        """Flow-matching MSE on the frames of group t+1 from the state of row t (and the latents of group t),
        and the stop head's CE on how many frames of group t+1 are speech. `embed` is the model's
        `OmniDRCAContinuousSpeechEmbedding` (it owns the latents' normalisation)."""
        k = self.group_size
        targets = speech_labels[:, 1:].to(hidden.device)  # (B, L-1, k)
        selected = (targets != IGNORE_INDEX).any(-1)  # (B, L-1)
        if not bool(selected.any()):
            zero = hidden.sum() * 0.0
            return SpeechHeadLoss(zero, stop_loss=zero, stop_weight=self.config.stop_loss_weight)
        if speech_latents is None:
            raise ValueError(
                "The diffusion head learns continuous latents: pass `speech_latents` (batch, seq_len, group_size, "
                "latent_dim) with `speech_labels` (`processor.build_training_batch` adds them when the examples "
                "carry `answer_latents`)."
            )
        target_ids = targets[selected]  # (P, k)
        target_mask = embed.frame_mask(target_ids)  # (P, k) speech frames to learn
        has_eos = (target_ids == self.eos_id).any(-1)
        stop_target = torch.where(has_eos, target_mask.sum(-1), torch.full_like(has_eos, k, dtype=torch.long))  # (P,)
        h = hidden[:, :-1][selected]  # (P, D)
        stop_loss = F.cross_entropy(self.stop_head(h).float(), stop_target)
        latents = embed.normalize(speech_latents.to(hidden.device).float())  # (B, L, k, d)
        previous_ids = speech_ids[:, :-1].to(hidden.device)[selected]  # (P, k)
        previous_mask = embed.frame_mask(previous_ids)
        previous = latents[:, :-1][selected] * previous_mask[..., None]  # (P, k, d)
        target = latents[:, 1:][selected] * target_mask[..., None]
        speech_loss = self.flow_matching_loss(h, target, target_mask, previous, previous_mask)
        return SpeechHeadLoss(speech_loss, stop_loss=stop_loss, stop_weight=self.config.stop_loss_weight)

    def start_generation(self, model, settings, device: torch.device) -> DiffusionGeneration:
        return DiffusionGeneration(model, settings, device)


class DiffusionGeneration:
    """The diffusion head's per-generation state: the ODE settings and the noise the flow starts from.

    A group: the stop head on h says how many of the k frames are speech (k = all; n < k = n frames, then
    `[eos]`), the DiT integrates the flow from noise to the k normalised latents, conditioned on h and the
    previous group's latents; their FSQ codes fill the ids so every id-based consumer keeps working.
    """

    def __init__(self, model, settings, device: torch.device):
        cfg = model.config
        self.model, self.head, self.embed = model, model.speech_head, model.model.speech_embed
        self.settings, self.device, self.flow = settings, device, settings.flow
        self.k, self.pad, self.eos = cfg.group_size, cfg.speech_pad_token_id, cfg.speech_eos_token_id
        self.latent_dim = cfg.codec_config.latent_dim
        self.snap_to_codebook = bool(cfg.diffusion_config.snap_to_codebook)
        # The flow starts from noise: a fixed seed when the speech stream is not sampled, so greedy generation is
        # deterministic like the SRH's argmax; otherwise the caller's generator.
        if settings.speech.do_sample:
            self.noise_generator, self.noise_scale = settings.generator, settings.speech.temperature
        else:
            self.noise_generator = torch.Generator(device=device).manual_seed(0)
            self.noise_scale = float(cfg.diffusion_config.noise_scale)

    def next_group(self, hidden: torch.Tensor, speech_history: torch.LongTensor, latent_history: torch.Tensor,
                   active: torch.BoolTensor) -> SpeechGroup:
        """The next group for the `active` rows: (B, k) ids (FSQ codes, then `[eos]`, `[pad]`) and (B, k, d)
        codec latents (0 off frames); `[pad]` and zeros for the other rows."""
        batch, k = hidden.shape[0], self.k
        group = torch.full((batch, k), self.pad, dtype=torch.long, device=self.device)
        latents = torch.zeros(batch, k, self.latent_dim, device=self.device)
        if not bool(active.any()):
            return SpeechGroup(group, latents)
        if speech_history.shape[1]:
            previous_ids, previous_latents = speech_history[:, -k:], latent_history[:, -k:]  # (B, k), (B, k, d)
        else:
            previous_ids, previous_latents = group, latents
        ids, raw = self._frames(hidden[active], previous_ids[active], previous_latents[active])
        group[active] = ids
        latents[active] = raw
        return SpeechGroup(group, latents)

    def _frames(self, h: torch.Tensor, previous_ids: torch.LongTensor, previous_latents: torch.Tensor):
        """(n, D) states and the previous group -> (n, k) ids and (n, k, d) latents (0 off frames)."""
        s, k = self.settings, self.k
        stop_logits = self.head.stop_head(h).float()  # (n, k + 1)
        if s.speech.do_sample:
            frames = torch.multinomial(torch.softmax(stop_logits, -1), 1, generator=s.generator).squeeze(-1)
        else:
            frames = stop_logits.argmax(-1)  # (n,) speech frames in this group; k = a full group
        previous_mask = self.embed.frame_mask(previous_ids)  # (n, k)
        previous = self.embed.normalize(previous_latents.float()) * previous_mask[..., None]
        sampled = self.head.sample(h, previous, previous_mask, noise_scale=self.noise_scale,
                                   generator=self.noise_generator, **self.flow)  # (n, k, d) normalised
        raw = self.embed.denormalize(sampled).clamp(-1.0, 1.0)  # the codec's latents are bounded to [-1, 1]
        is_frame = torch.arange(k, device=h.device) < frames[:, None]  # (n, k)
        codes = self.model.speech_codec.quantizer.latents_to_codes(raw)  # (n, k)
        ids = torch.where(is_frame, codes, torch.full_like(codes, self.pad))
        ends = frames < k
        ids[ends, frames[ends]] = self.eos
        return ids, raw * is_frame[..., None]

    def decode(self, speech_ids: torch.LongTensor, speech_latents: torch.Tensor, lengths: torch.LongTensor):
        """(B, T, d) generated codec latents and (B,) frame counts -> (B, samples) waveform and (B,) sample counts."""
        return self.model._decode_latent_waveform(speech_latents, lengths)


__all__ = [
    "DiffusionGeneration",
    "OmniDRCAContinuousSpeechEmbedding",
    "OmniDRCADiTBlock",
    "OmniDRCADiffusionHead",
    "OmniDRCAZeroInitLinear",
    "timestep_features",
]
