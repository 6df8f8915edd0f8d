"""A transformer field on sequences: f(x, c) for x of shape (B, T, D), optionally causal in time.

Each of the T steps (D features) is embedded linearly to ``width`` channels, a fixed sinusoidal
position encoding is added, and so is an embedding of the conditioning (Fourier features of
ln σ / 4 or t, then a small MLP), the same for every step. ``depth`` pre-LayerNorm blocks follow
(h + Attn(LN(h)), then h + MLP(LN(h)) with GELU), then a final LayerNorm and a linear map back to
D features per step.

With ``causal=True`` step t attends only to steps s ≤ t, and every other operation acts on one
step at a time, so the output at step t depends on the inputs at steps ≤ t only:
∂f[:, t]/∂x[:, s] = 0 exactly for s > t (the masked attention weights are exact zeros). Wrapped
in :class:`~fluxmatch.fields.EDMPreconditioned` the field stays causal (the skip term −x/(σ² + σ_d²)
acts on each entry alone).
"""

from __future__ import annotations

import math
import operator

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import FluxMatchError

CONDITIONINGS = (None, "sigma", "time")
MAX_FREQUENCY = 1000.0  # the Fourier features of the conditioning span frequencies 1..1000, as in the UNet


def positive_int(value, name: str) -> int:
    """``value`` as an int, or raise naming ``name`` if it is not a positive integer."""
    try:
        number = operator.index(value)
    except TypeError:
        raise FluxMatchError(f"{name} must be a positive integer, got {value!r}") from None
    if isinstance(value, bool) or number < 1:
        raise FluxMatchError(f"{name} must be a positive integer, got {value!r}")
    return int(number)


def check_conditioning(conditioning) -> str | None:
    """``conditioning`` if it is None, "sigma" or "time"; else raise."""
    if conditioning not in CONDITIONINGS:
        raise FluxMatchError(f"unknown conditioning {conditioning!r}: expected one of {CONDITIONINGS}")
    return conditioning


def conditioning_feature(conditioning: str | None, c, batch: int, dtype: torch.dtype, device) -> torch.Tensor | None:
    """The (B,) input feature of the conditioning, as :class:`~fluxmatch.fields.MLPField` forms it:
    ln σ / 4 for "sigma" (σ > 0 and finite, else raise), t as is for "time", None for None.

    Args:
        conditioning: None, "sigma" or "time".
        c: a scalar or a (B,) tensor (ignored when ``conditioning`` is None).
        batch, dtype, device: B and the feature's dtype and device (those of x).
    """
    if conditioning is None:
        return None
    if c is None:
        raise FluxMatchError(f"this field is conditioned on {conditioning}: pass it as the second argument")
    c = torch.as_tensor(c, dtype=dtype, device=device).reshape(-1)
    if c.shape[0] not in (1, batch):
        raise FluxMatchError(f"got {c.shape[0]} conditioning values ({conditioning}) for a batch of {batch}: give one, or one per row")
    if conditioning == "sigma" and not bool((c > 0).all() and torch.isfinite(c).all()):
        raise FluxMatchError("a σ-conditioned field takes positive finite noise levels σ (its input feature is ln σ / 4)")
    feature = c.log() / 4 if conditioning == "sigma" else c
    return feature.expand(batch)


def sinusoidal_positions(length: int, width: int) -> torch.Tensor:
    """(length, width) fixed position encoding: sin and cos of t / 10000^(2k/width), interleaved."""
    half = (width + 1) // 2
    angles = torch.arange(length, dtype=torch.float64)[:, None] / 10000.0 ** (torch.arange(half, dtype=torch.float64) * 2 / width)
    return torch.stack([angles.sin(), angles.cos()], dim=-1).reshape(length, 2 * half)[:, :width].float()


class _Block(nn.Module):
    """A pre-LayerNorm transformer block: h + Attn(LN(h)), then h + MLP(LN(h)) (GELU); (B, T, W) → (B, T, W)."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, causal: bool) -> None:
        super().__init__()
        self.heads, self.causal = heads, causal
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_ratio * width), nn.GELU(), nn.Linear(mlp_ratio * width, width))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, w = h.shape
        q, k, v = self.qkv(self.norm1(h)).reshape(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # (B, heads, T, W / heads)
        h = h + self.proj(attended.transpose(1, 2).reshape(b, t, w))
        return h + self.mlp(self.norm2(h))


class TransformerField(nn.Module):
    """A vector field ``f(x, c)`` on sequences x (B, T, D) given by a transformer over the T steps.

    Args:
        seq_len: T, the number of time steps of one point.
        features: D, the features per step.
        width: channels of the token representation (divisible by ``heads``).
        depth: number of transformer blocks.
        heads: attention heads.
        causal: step t attends only to steps ≤ t (the output at t depends on x[:, :t + 1] only);
            False: full attention.
        conditioning: None (``c`` is ignored), "sigma" (``c`` is σ > 0, fed as ln σ / 4 as in
            EDM's c_noise) or "time" (``c`` is t, fed as is); the conditioning is embedded and
            added to every token.
        mlp_ratio: the blocks' MLPs have ``mlp_ratio · width`` hidden units.

    Attributes: ``seq_len``, ``features``, ``dim`` (= T · D, the entries of one point),
    ``causal``, ``conditioning``, ``config``.

    Shapes: ``x`` (B, T, D) (data units); ``c`` a scalar or (B,) tensor; output (B, T, D), in the
    units of a score (1/data units) when trained as one.

    Example:
        >>> TransformerField(50, 4)(torch.randn(2, 50, 4)).shape
        torch.Size([2, 50, 4])
        >>> TransformerField(10, 2, conditioning="sigma")(torch.randn(3, 10, 2), 0.5).shape
        torch.Size([3, 10, 2])
    """

    def __init__(
        self,
        seq_len: int,
        features: int,
        width: int = 64,
        depth: int = 2,
        heads: int = 4,
        causal: bool = True,
        conditioning: str | None = None,
        mlp_ratio: int = 4,
    ) -> None:
        super().__init__()
        self.seq_len, self.features = positive_int(seq_len, "seq_len"), positive_int(features, "features")
        self.width, self.depth, self.heads = positive_int(width, "width"), positive_int(depth, "depth"), positive_int(heads, "heads")
        self.mlp_ratio = positive_int(mlp_ratio, "mlp_ratio")
        if self.width % self.heads:
            raise FluxMatchError(f"width {self.width} must be divisible by the number of heads {self.heads}")
        if not isinstance(causal, bool):
            raise FluxMatchError(f"causal must be True or False, got {causal!r}")
        self.causal, self.conditioning = causal, check_conditioning(conditioning)
        self.dim = self.seq_len * self.features
        self.embed = nn.Linear(self.features, self.width)
        self.register_buffer("positions", sinusoidal_positions(self.seq_len, self.width), persistent=False)
        if conditioning is not None:
            n_freq = max(1, self.width // 2)
            self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(MAX_FREQUENCY), n_freq)), persistent=False)
            self.cond_mlp = nn.Sequential(nn.Linear(2 * n_freq, self.width), nn.SiLU(), nn.Linear(self.width, self.width))
        self.blocks = nn.ModuleList([_Block(self.width, self.heads, self.mlp_ratio, causal) for _ in range(self.depth)])
        self.norm = nn.LayerNorm(self.width)
        self.head = nn.Linear(self.width, self.features)

    @property
    def config(self) -> dict:
        """What :func:`fluxmatch.fields.build_field` needs to rebuild this field."""
        return {
            "type": "transformer",
            "seq_len": self.seq_len,
            "features": self.features,
            "width": self.width,
            "depth": self.depth,
            "heads": self.heads,
            "causal": self.causal,
            "conditioning": self.conditioning,
            "mlp_ratio": self.mlp_ratio,
        }

    def _check_shape(self, x: torch.Tensor) -> None:
        expected = (self.seq_len, self.features)
        if not isinstance(x, torch.Tensor) or x.ndim != 3 or tuple(x.shape[1:]) != expected:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise FluxMatchError(f"this transformer field takes sequences of shape (B, T={self.seq_len}, D={self.features}), got shape {got}")

    def forward(self, x: torch.Tensor, c: torch.Tensor | float | None = None) -> torch.Tensor:
        self._check_shape(x)
        h = self.embed(x) + self.positions.to(x.dtype)
        feature = conditioning_feature(self.conditioning, c, x.shape[0], x.dtype, x.device)
        if feature is not None:
            angles = feature[:, None] * self.freqs.to(x.dtype)
            h = h + self.cond_mlp(torch.cat([angles.cos(), angles.sin()], dim=1))[:, None, :]
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))
