"""A UNet backbone F(y, c_noise, labels) for images, sized by configuration.

The layout follows the DDPM/EDM family: a noise embedding (Fourier features of c_noise, then an
MLP) and an optional class embedding (with a "null" class for classifier-free guidance) are
added into every residual block; the encoder halves the resolution between levels, the decoder
doubles it and concatenates the encoder's activations; self-attention runs at the resolutions
listed in ``attn_resolutions``. The output convolution starts at zero, so an untrained
backbone outputs 0 (with EDM preconditioning: the exact score of N(0, σ_data² I) smoothed by σ).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import FluxMatchError

UNET_PRESETS = {
    # CPU scale: 8×8 grey digits, 0.67M parameters (self-attention only in the 4×4 middle block)
    "digits": {"channels": 32, "channel_mult": (1, 2), "num_blocks": 1, "attn_resolutions": (), "dropout": 0.0, "resolution": 8},
    # EDM's DDPM++ CIFAR-10 size (Karras et al. 2022, Table 7 / networks.py SongUNet defaults)
    "cifar10": {"channels": 128, "channel_mult": (2, 2, 2), "num_blocks": 4, "attn_resolutions": (16,), "dropout": 0.13, "resolution": 32},
    # EDM's 64×64 size for FFHQ/AFHQ, used here for CelebA-64
    "celeba64": {"channels": 128, "channel_mult": (1, 2, 2, 2), "num_blocks": 4, "attn_resolutions": (16,), "dropout": 0.05, "resolution": 64},
}


def _groups(channels: int) -> int:
    """GroupNorm groups: up to 32, at least 4 channels per group, dividing ``channels``."""
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return groups


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, emb_dim: int, dropout: float, attention: bool) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * c_out)  # scale and shift of the second normalisation
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.attention = _Attention(c_out) if attention else None

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.silu(self.norm1(h)))
        scale, shift = self.emb(emb)[:, :, None, None].chunk(2, dim=1)
        out = F.silu(self.norm2(out) * (1 + scale) + shift)
        out = self.skip(h) + self.conv2(self.dropout(out))
        return out if self.attention is None else self.attention(out)


class _Attention(nn.Module):
    """Single-head self-attention over the spatial positions, with a residual connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, c, hh, ww = h.shape
        q, k, v = self.qkv(self.norm(h)).reshape(b, 3, c, hh * ww).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return h + self.proj(out.transpose(1, 2).reshape(b, c, hh, ww))


class UNet(nn.Module):
    """UNet backbone ``F(y, c_noise, labels=None)`` → tensor shaped like y (B, C, H, W).

    Args:
        in_channels: image channels C.
        channels: base width; level i has ``channels · channel_mult[i]`` channels.
        channel_mult: width multipliers, one per resolution level (H, H/2, H/4, …).
        num_blocks: residual blocks per level in the encoder (the decoder has one more).
        attn_resolutions: spatial sizes at which blocks add self-attention (e.g. (16,)).
        dropout: dropout rate inside the residual blocks.
        resolution: image size H = W the attention placement refers to.
        n_classes: 0 for an unconditional backbone; else labels 0..n_classes−1 and the null
            label ``n_classes`` (classifier-free guidance) are embedded and added.
        emb_dim: width of the noise/class embedding (default 4·channels).
        heads: output maps per input channel: the output has ``heads · C`` channels, head k in
            channels k·C … (k+1)·C − 1 (2: the score and flux heads of
            :class:`~fluxmatch.fields.precond.EDMSplit`, sharing the trunk).

    Shapes: y (B, C, H, W) with H, W divisible by 2^(levels−1); c_noise (B,) or scalar (EDM:
    ln σ / 4); labels (B,) long or None. Output (B, heads·C, H, W).
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 32,
        channel_mult=(1, 2),
        num_blocks: int = 1,
        attn_resolutions=(),
        dropout: float = 0.0,
        resolution: int = 8,
        n_classes: int = 0,
        emb_dim: int | None = None,
        heads: int = 1,
    ) -> None:
        super().__init__()
        if in_channels < 1 or channels < 1 or num_blocks < 1 or heads < 1 or not channel_mult:
            raise FluxMatchError("UNet sizes must be positive: in_channels, channels, num_blocks, heads ≥ 1 and at least one channel multiplier")
        self.heads = int(heads)
        self.in_channels, self.channels, self.num_blocks = int(in_channels), int(channels), int(num_blocks)
        self.channel_mult = tuple(int(m) for m in channel_mult)
        self.attn_resolutions = tuple(int(r) for r in attn_resolutions)
        self.dropout, self.resolution, self.n_classes = float(dropout), int(resolution), int(n_classes)
        self.emb_dim = int(emb_dim or 4 * channels)
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(1000.0), channels // 2)))
        self.noise_mlp = nn.Sequential(nn.Linear(2 * (channels // 2), self.emb_dim), nn.SiLU(), nn.Linear(self.emb_dim, self.emb_dim))
        self.label_emb = nn.Embedding(self.n_classes + 1, self.emb_dim) if self.n_classes else None
        self.conv_in = nn.Conv2d(self.in_channels, channels, 3, padding=1)

        widths = [channels * m for m in self.channel_mult]
        self.down = nn.ModuleList()
        skips, c, res = [channels], channels, self.resolution
        for level, width in enumerate(widths):
            for _ in range(self.num_blocks):
                self.down.append(_ResBlock(c, width, self.emb_dim, self.dropout, res in self.attn_resolutions))
                c = width
                skips.append(c)
            if level < len(widths) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
                res //= 2
        self.mid = nn.ModuleList([_ResBlock(c, c, self.emb_dim, self.dropout, True), _ResBlock(c, c, self.emb_dim, self.dropout, False)])
        self.up = nn.ModuleList()
        for level, width in reversed(list(enumerate(widths))):
            for _ in range(self.num_blocks + 1):
                self.up.append(_ResBlock(c + skips.pop(), width, self.emb_dim, self.dropout, res in self.attn_resolutions))
                c = width
            if level > 0:
                self.up.append(nn.Upsample(scale_factor=2, mode="nearest"))
                res *= 2
        self.norm_out = nn.GroupNorm(_groups(c), c)
        self.conv_out = nn.Conv2d(c, self.heads * self.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def config(self) -> dict:
        return {
            "type": "unet",
            "in_channels": self.in_channels,
            "channels": self.channels,
            "channel_mult": list(self.channel_mult),
            "num_blocks": self.num_blocks,
            "attn_resolutions": list(self.attn_resolutions),
            "dropout": self.dropout,
            "resolution": self.resolution,
            "n_classes": self.n_classes,
            "emb_dim": self.emb_dim,
            **({"heads": self.heads} if self.heads != 1 else {}),
        }

    def _embedding(self, c_noise: torch.Tensor, labels: torch.Tensor | None, b: int) -> torch.Tensor:
        c_noise = torch.as_tensor(c_noise, dtype=self.freqs.dtype, device=self.freqs.device).reshape(-1).expand(b)
        angles = c_noise[:, None] * self.freqs
        emb = self.noise_mlp(torch.cat([angles.cos(), angles.sin()], 1))
        if self.label_emb is not None:
            if labels is None:
                labels = torch.full((b,), self.n_classes, dtype=torch.long, device=emb.device)  # the null class
            labels = torch.as_tensor(labels, device=emb.device).long().reshape(-1)
            if labels.shape[0] != b or labels.min() < 0 or labels.max() > self.n_classes:
                raise FluxMatchError(f"labels must be {b} integers in 0..{self.n_classes} ({self.n_classes} is the null class)")
            emb = emb + self.label_emb(labels)
        elif labels is not None:
            raise FluxMatchError("this UNet is unconditional (n_classes = 0): it takes no labels")
        return F.silu(emb)

    def forward(self, y: torch.Tensor, c_noise, labels: torch.Tensor | None = None) -> torch.Tensor:
        levels = len(self.channel_mult) - 1
        if y.ndim != 4 or y.shape[1] != self.in_channels or y.shape[2] % 2**levels or y.shape[3] % 2**levels:
            raise FluxMatchError(
                f"this UNet takes images (B, {self.in_channels}, H, W) with H and W divisible by {2**levels}, got shape {tuple(y.shape)}"
            )
        emb = self._embedding(c_noise, labels, y.shape[0])
        h = self.conv_in(y)
        stack = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, _ResBlock) else layer(h)
            stack.append(h)
        for block in self.mid:
            h = block(h, emb)
        for layer in self.up:
            h = layer(torch.cat([h, stack.pop()], 1), emb) if isinstance(layer, _ResBlock) else layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))
