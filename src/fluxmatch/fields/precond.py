"""EDM preconditioning (Karras et al. 2022) of a backbone, giving a σ-conditioned field in score units.

    D(x, σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x, c_noise(σ)),      f(x, σ) = (D(x, σ) − x) / σ²

with c_skip = σ_d²/(σ² + σ_d²), c_out = σ σ_d/sqrt(σ² + σ_d²), c_in = 1/sqrt(σ² + σ_d²),
c_noise = ln(σ)/4 (docs/MATH.md §4). D is a denoiser, f ≈ ∇log p_σ: with F = 0, f = −x/(σ² + σ_d²),
the exact score of N(0, σ_d² I) smoothed by σ. The field is formed without the cancellation in
(D − x): f = −x/(σ² + σ_d²) + (c_out/σ²) F.

A backbone that declares ``conditioning == "sigma"`` (an :class:`~fluxmatch.fields.MLPField`,
which feeds ln σ / 4 itself) is given σ instead of c_noise; its feature is then exactly c_noise
(taking ln of c_noise, negative below σ = 1, would give NaN).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import FluxMatchError, check_positive


def _sigma_column(sigma, x: torch.Tensor) -> torch.Tensor:
    """σ as a (B, 1, …, 1) tensor broadcasting over x's event dimensions; checked positive."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
    if s.numel() == 1:
        s = s.expand(x.shape[0])
    if s.shape[0] != x.shape[0]:
        raise FluxMatchError(f"got {s.shape[0]} noise levels for a batch of {x.shape[0]}")
    if not bool((s > 0).all()) or not bool(torch.isfinite(s).all()):
        raise FluxMatchError("every noise level σ must be a positive finite number")
    return s.reshape(-1, *([1] * (x.ndim - 1)))


def edm_coefficients(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in, c_noise) for σ of any shape (data units)."""
    total = sigma.square() + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), 1 / total.sqrt(), sigma.log() / 4


class _EDMWrapped(nn.Module):
    """A backbone (module or its config dict) and the σ_data its EDM coefficients use."""

    def __init__(self, backbone, sigma_data: float = 0.5) -> None:
        super().__init__()
        if isinstance(backbone, dict):
            from . import build_field

            backbone = build_field(backbone)
        self.backbone = backbone
        self.sigma_data = check_positive(sigma_data, "sigma_data")

    def _noise_input(self, s: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        """The backbone's (B,) noise input: c_noise, or σ itself for a backbone that declares
        σ-conditioning (an MLPField, whose own input feature ln σ / 4 is then exactly c_noise)."""
        return s.reshape(-1) if getattr(self.backbone, "conditioning", None) == "sigma" else c_noise.reshape(-1)


class EDMPreconditioned(_EDMWrapped):
    """A σ-conditioned field f(x, σ[, labels]) = (D(x, σ) − x)/σ² around a backbone F(y, c_noise[, labels]).

    Args:
        backbone: module called as ``backbone(y, c_noise)`` or ``backbone(y, c_noise, labels)``,
            returning a tensor shaped like y (e.g. :class:`~fluxmatch.fields.unet.UNet`), or its
            config dict; σ in place of c_noise if it declares ``conditioning == "sigma"``.
        sigma_data: σ_d, the data's standard deviation in model units (EDM: 0.5).

    Shapes: x (B, ...) model units; σ a scalar or (B,) tensor > 0; labels (B,) or None. The
    output is shaped like x, in units 1/model units (a score).
    """

    conditioning = "sigma"

    @property
    def n_classes(self) -> int:
        return int(getattr(self.backbone, "n_classes", 0) or 0)

    @property
    def config(self) -> dict:
        return {"type": "edm", "backbone": self.backbone.config, "sigma_data": self.sigma_data}

    def _backbone(self, x: torch.Tensor, s: torch.Tensor, labels):
        c_skip, c_out, c_in, c_noise = edm_coefficients(s, self.sigma_data)
        cond = self._noise_input(s, c_noise)
        args = (c_in * x, cond) if labels is None else (c_in * x, cond, labels)
        return c_skip, c_out, self._heads(self.backbone(*args), x)

    def _heads(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The backbone's output, checked to be shaped like x."""
        if out.shape != x.shape:
            raise FluxMatchError(f"the backbone returned shape {tuple(out.shape)} for input of shape {tuple(x.shape)}")
        return out

    def denoise(self, x: torch.Tensor, sigma, labels: torch.Tensor | None = None) -> torch.Tensor:
        """D(x, σ): the denoised estimate of the clean image, shaped like x (model units)."""
        s = _sigma_column(sigma, x)
        c_skip, c_out, out = self._backbone(x, s, labels)
        return c_skip * x + c_out * out

    def forward(self, x: torch.Tensor, sigma, labels: torch.Tensor | None = None) -> torch.Tensor:
        s = _sigma_column(sigma, x)
        _, c_out, out = self._backbone(x, s, labels)
        return -x / (s.square() + self.sigma_data**2) + (c_out / s.square()) * out


class EDMSplit(EDMPreconditioned):
    """A σ-conditioned field in two parts, ``f = s_θ + w_θ``: a score head and a flux head.

        s_θ(x, σ) = −x/(σ² + σ_d²) + (c_out/σ²) F_s,      w_θ(x, σ) = (c_out/σ²) F_w,

    with (F_s, F_w) the two heads of one backbone that shares its trunk (a
    :class:`~fluxmatch.fields.unet.UNet` or :class:`~fluxmatch.fields.MLPField` built with
    ``heads=2``), so the field costs one backbone pass. The split estimator
    (:class:`~fluxmatch.objectives.estimators.SplitEstimator`) trains s_θ by denoising score
    matching and w_θ by Flux Matching; the sum is the field every sampler sees. The flux head
    starts at zero, so an untrained field is the score head alone.

    Args:
        backbone: a two-headed backbone (module or config dict), called like
            :class:`EDMPreconditioned`'s; its output holds F_s then F_w (channels or entries).
        sigma_data: σ_d, as in :class:`EDMPreconditioned`.

    Shapes: x (B, ...) model units; σ a scalar or (B,) tensor; both parts and the field shaped like x.

    Example:
        >>> field = EDMSplit(MLPField(2, (16,), conditioning="sigma", heads=2))
        >>> score, flux = field.parts(torch.randn(4, 2), torch.full((4,), 0.5))
        >>> float(flux.abs().max())
        0.0
    """

    def __init__(self, backbone, sigma_data: float = 0.5) -> None:
        super().__init__(backbone, sigma_data)
        if int(getattr(self.backbone, "heads", 1)) != 2:
            raise FluxMatchError(f"a split field needs a backbone with two heads (heads=2), got {type(self.backbone).__name__} with {getattr(self.backbone, 'heads', 1)}")
        _zero_second_head(self.backbone)

    @property
    def config(self) -> dict:
        return {"type": "edm_split", "backbone": self.backbone.config, "sigma_data": self.sigma_data}

    def _heads(self, out: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(F_s, F_w), each shaped like x, from a two-headed backbone's output."""
        if out.numel() != 2 * x.numel():
            raise FluxMatchError(f"a two-headed backbone returned shape {tuple(out.shape)} for input of shape {tuple(x.shape)}")
        heads = out.reshape(x.shape[0], 2, -1)
        return heads[:, 0].reshape(x.shape), heads[:, 1].reshape(x.shape)

    def parts(self, x: torch.Tensor, sigma, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(s_θ, w_θ), each shaped like x (units 1/model units), from one backbone pass."""
        s = _sigma_column(sigma, x)
        _, c_out, (score, flux) = self._backbone(x, s, labels)
        scale = c_out / s.square()
        return -x / (s.square() + self.sigma_data**2) + scale * score, scale * flux

    def denoise(self, x: torch.Tensor, sigma, labels: torch.Tensor | None = None) -> torch.Tensor:
        """x + σ² f(x, σ): the denoiser whose score is the whole field (model units)."""
        return x + _sigma_column(sigma, x).square() * self(x, sigma, labels)

    def forward(self, x: torch.Tensor, sigma, labels: torch.Tensor | None = None) -> torch.Tensor:
        score, flux = self.parts(x, sigma, labels)
        return score + flux


class ScoreFixed(nn.Module):
    """A view of an :class:`EDMSplit` field whose score head is held fixed: ``sg(s_θ) + w_θ``.

    What the split estimator hands to design terms (a fast-mixing or rotation reward), so that
    they shape the flux head and leave the score head to denoising score matching. Shares the
    field's parameters; called like the field.
    """

    def __init__(self, field: EDMSplit) -> None:
        super().__init__()
        self.field = field

    @property
    def n_classes(self) -> int:
        return self.field.n_classes

    def forward(self, x: torch.Tensor, sigma, labels: torch.Tensor | None = None) -> torch.Tensor:
        score, flux = self.field.parts(x, sigma, labels)
        return score.detach() + flux


def _zero_second_head(backbone: nn.Module) -> None:
    """Zero the output weights of a two-headed backbone's second head (a UNet's last channels,
    an MLPField's last entries), so that the flux head starts at w = 0."""
    last = getattr(backbone, "conv_out", None)
    if last is None and isinstance(getattr(backbone, "net", None), nn.Sequential):
        last = backbone.net[-1]
    if not isinstance(last, (nn.Conv2d, nn.Linear)):
        raise FluxMatchError(f"cannot find the output layer of a {type(backbone).__name__} backbone to start its flux head at zero")
    half = last.weight.shape[0] // 2
    with torch.no_grad():
        last.weight[half:].zero_()
        if last.bias is not None:
            last.bias[half:].zero_()


class MLPScalar(nn.Module):
    """A scalar network G(y, c_noise[, labels]) → (B,) on flattened inputs (SiLU MLP).

    Args:
        dim: entries per input point; hidden: widths; n_classes: 0, or classes whose one-hot
            code (with the null class ``n_classes``) is appended to the input.
    """

    def __init__(self, dim: int, hidden=(256, 256), n_classes: int = 0) -> None:
        super().__init__()
        self.dim, self.hidden, self.n_classes = int(dim), tuple(int(h) for h in hidden), int(n_classes)
        widths = [self.dim + 1 + (self.n_classes + 1 if self.n_classes else 0), *self.hidden]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.SiLU()]
        layers.append(nn.Linear(widths[-1], 1))
        self.net = nn.Sequential(*layers)

    @property
    def config(self) -> dict:
        return {"type": "mlp_scalar", "dim": self.dim, "hidden": list(self.hidden), "n_classes": self.n_classes}

    def forward(self, y: torch.Tensor, c_noise, labels: torch.Tensor | None = None) -> torch.Tensor:
        flat = y.reshape(y.shape[0], -1)
        if flat.shape[1] != self.dim:
            raise FluxMatchError(f"this network takes points with {self.dim} entries, got shape {tuple(y.shape)}")
        parts = [flat, torch.as_tensor(c_noise, dtype=flat.dtype, device=flat.device).reshape(-1, 1).expand(flat.shape[0], 1)]
        if self.n_classes:
            if labels is None:
                labels = torch.full((flat.shape[0],), self.n_classes, dtype=torch.long, device=flat.device)
            labels = torch.as_tensor(labels, device=flat.device).long().reshape(-1)
            if labels.shape[0] != flat.shape[0] or labels.min() < 0 or labels.max() > self.n_classes:
                raise FluxMatchError(f"labels must be {flat.shape[0]} integers in 0..{self.n_classes} ({self.n_classes} is the null class)")
            parts.append(nn.functional.one_hot(labels, self.n_classes + 1).to(flat.dtype))
        return self.net(torch.cat(parts, 1))[:, 0]


class PreconditionedPotential(_EDMWrapped):
    """A scalar potential for Flux Matching's potential estimator on σ-conditioned fields.

    ``gradient(x, σ)`` returns v = (c_out/σ²) ∇_y G(y, c_noise) at y = c_in x: the gradient of
    the potential g(x, σ) = (c_out/(c_in σ²)) G(c_in x, c_noise) (a conservative field in x),
    scaled like the field's backbone output in :class:`EDMPreconditioned`, so a unit change of
    ∇_y G is a unit change of F.

    Args:
        backbone: scalar network ``G(y, c_noise[, labels]) → (B,)`` (e.g. :class:`MLPScalar`)
            or its config dict; σ in place of c_noise if it declares ``conditioning == "sigma"``
            (e.g. a σ-conditioned :class:`~fluxmatch.fields.MLPPotential`).
        sigma_data: σ_d as in :class:`EDMPreconditioned`.
    """

    @property
    def config(self) -> dict:
        return {"type": "edm_potential", "backbone": self.backbone.config, "sigma_data": self.sigma_data}

    def gradient(self, x: torch.Tensor, sigma, labels: torch.Tensor | None = None, create_graph: bool = True) -> torch.Tensor:
        """v(x, σ), shaped like x (units 1/model units); differentiable in the parameters when
        ``create_graph``."""
        s = _sigma_column(sigma, x)
        _, c_out, c_in, c_noise = edm_coefficients(s, self.sigma_data)
        with torch.enable_grad():
            y = (c_in * x).detach().requires_grad_(True)
            cond = self._noise_input(s, c_noise)
            args = (y, cond) if labels is None else (y, cond, labels)
            (grad,) = torch.autograd.grad(self.backbone(*args).sum(), y, create_graph=create_graph)
        return (c_out / s.square()) * grad


class UNetScalar(nn.Module):
    """A convolutional scalar network ``G(y, c_noise[, labels]) = ½ Σ y ⊙ U(y, c_noise)`` → (B,).

    U is a small :class:`~fluxmatch.fields.unet.UNet`; the quadratic form gives the potential a
    convolutional gradient ∇_y G = ½(U + (∂U/∂y)ᵀ y), so a potential built on it sees images the
    way the field's UNet does. Its double backward runs through U (cost ≈ 3 passes of U).
    Measured on the digits (3000 steps, seed 0, 16 channels): FD-digits 480 against 18.7 for the
    MLP potential; it is an option to build on, not a default.

    Args: as :class:`~fluxmatch.fields.unet.UNet` (``in_channels``, ``channels``,
    ``channel_mult``, ``resolution``, ``n_classes``).
    """

    def __init__(self, in_channels: int = 1, channels: int = 16, channel_mult=(1, 2), resolution: int = 8, n_classes: int = 0) -> None:
        super().__init__()
        from .unet import UNet

        self.unet = UNet(in_channels=in_channels, channels=channels, channel_mult=channel_mult, resolution=resolution, n_classes=n_classes)
        nn.init.normal_(self.unet.conv_out.weight, std=1e-3)  # a zero output would give a zero gradient for ever
        self.n_classes = int(n_classes)

    @property
    def config(self) -> dict:
        u = self.unet
        return {"type": "unet_scalar", "in_channels": u.in_channels, "channels": u.channels, "channel_mult": list(u.channel_mult), "resolution": u.resolution, "n_classes": self.n_classes}

    def forward(self, y: torch.Tensor, c_noise, labels: torch.Tensor | None = None) -> torch.Tensor:
        return 0.5 * (y * self.unet(y, c_noise, labels)).flatten(1).sum(1)
