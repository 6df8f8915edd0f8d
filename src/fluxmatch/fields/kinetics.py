"""Mechanistic fields: RNA splicing kinetics, whose parameters are the model.

A cell is a point x ∈ R^{G×2}: per gene g its unspliced and spliced abundance (u_g, s_g). The
field is the kinetic model itself,

    du_g/dt = α_g − β_g u_g,        ds_g/dt = β_g u_g − γ_g s_g,

so its value at a cell is that cell's RNA velocity (ds/dt is what scVelo calls ``velocity``) and
its parameters are splicing rates β and degradation rates γ, in 1/time. All rates are positive
by construction: β = exp(b) and γ = exp(c) (plus a floor), so that an optimizer moves them by
factors, not by steps; they start at the paper's softplus(0) = ln 2. The transcription rate α_g
is where the variants differ:

- ``"kinetic"`` (the Flux Matching paper's, with a learned scale e^k): ``α_g = e^{k_g}
  softplus(a_g u_g + b_g s_g + c_g)``, six numbers per gene, no gene–gene coupling;
- ``"regulatory"``: α_g also sees the other genes, ``+ Σ_{h≠g} W_gh s̃_h`` with s̃ = s / scale the
  spliced abundances in units of their typical level; W (G×G, zero diagonal) is the learned
  regulatory network, kept sparse by an L1 penalty (:meth:`KineticField.penalty`), read off with
  :meth:`KineticField.regulation_matrix`;
- ``state_rank = r > 0`` (either variant): β and γ depend on the cell's state through r learned
  directions of the spliced profile, ``β_g(x) = exp(b_g + Σ_k B_kg tanh(z_k))``,
  ``z = s̃ P`` (P: G×r), for data whose rates change along the lineage.

Every parameter that couples starts at 0, so each variant starts as the plain linear kinetics
(α = β = γ = ln 2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FluxMatchError, check_integer

VARIANTS = ("kinetic", "regulatory")
#: the largest log rate: state-dependent log rates are clamped here so that e^log stays finite in
#: float32 (e^88.7 overflows); e^60 ≈ 1e26 per unit time is far beyond any splicing kinetics
MAX_LOG_RATE = 60.0


class KineticField(nn.Module):
    """Splicing kinetics as a vector field over cells (module docstring).

    Args:
        n_genes: G.
        variant: "kinetic" or "regulatory".
        state_rank: r ≥ 0, cell-state directions the rates depend on (0: rates per gene only).
        scale: (G,) typical spliced level per gene (the unit of s̃); ones when None.
        min_rate: the floor added to every rate (1/time).

    Call: ``field(x)`` (or ``field(x, sigma)``, σ ignored) with x (B, G, 2) = (u, s) per gene
    gives (B, G, 2) = (du/dt, ds/dt) in abundance units per time unit.

    Example:
        >>> field = KineticField(3)
        >>> x = torch.ones(4, 3, 2)
        >>> field(x).shape
        torch.Size([4, 3, 2])
        >>> round(float(field.rates(x)["beta"][0]), 4)   # ln 2 + 1e-6
        0.6931
    """

    def __init__(self, n_genes: int, variant: str = "kinetic", state_rank: int = 0, scale=None, min_rate: float = 1e-6) -> None:
        super().__init__()
        g = check_integer(n_genes, "n_genes")
        if variant not in VARIANTS:
            raise FluxMatchError(f"unknown kinetic variant {variant!r}: expected one of {', '.join(VARIANTS)}")
        self.n_genes, self.variant, self.min_rate = g, variant, float(min_rate)
        self.state_rank = check_integer(state_rank, "state_rank", minimum=0)
        start = float(torch.log(F.softplus(torch.zeros(()))))
        self.log_beta = nn.Parameter(torch.full((g,), start))
        self.log_gamma = nn.Parameter(torch.full((g,), start))
        self.log_alpha_scale = nn.Parameter(torch.zeros(g))
        self.a_u = nn.Parameter(torch.zeros(g))
        self.a_s = nn.Parameter(torch.zeros(g))
        self.bias = nn.Parameter(torch.zeros(g))
        self.regulation = nn.Parameter(torch.zeros(g, g)) if variant == "regulatory" else None
        if self.state_rank:
            directions = torch.randn(g, self.state_rank, generator=torch.Generator().manual_seed(0)) / g**0.5
            self.state_directions = nn.Parameter(directions)
            self.state_beta = nn.Parameter(torch.zeros(self.state_rank, g))
            self.state_gamma = nn.Parameter(torch.zeros(self.state_rank, g))
        scale = torch.ones(g) if scale is None else torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
        if scale.shape != (g,) or not bool((scale > 0).all()):
            raise FluxMatchError(f"the kinetic field's scale must be {g} positive numbers, got shape {tuple(scale.shape)}")
        self.register_buffer("scale", scale.clone())
        self.register_buffer("off_diagonal", 1.0 - torch.eye(g) if variant == "regulatory" else torch.zeros(0))

    @property
    def config(self) -> dict:
        return {"name": "kinetic", "n_genes": self.n_genes, "variant": self.variant, "state_rank": self.state_rank}

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[1:] != (self.n_genes, 2):
            raise FluxMatchError(f"a kinetic field over {self.n_genes} genes takes (B, {self.n_genes}, 2) = (u, s) per gene, got {tuple(x.shape)}")

    def rates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rates at cells x (B, G, 2): ``alpha`` (B, G), ``beta`` and ``gamma`` ((G,), or
        (B, G) with state-dependent rates), all positive, in abundance/time and 1/time."""
        self._check(x)
        u, s = x[..., 0], x[..., 1]
        pre = self.a_u * u + self.a_s * s + self.bias
        s_unit = s / self.scale
        if self.regulation is not None:
            pre = pre + s_unit @ (self.regulation * self.off_diagonal).T
        log_beta, log_gamma = self.log_beta, self.log_gamma
        if self.state_rank:
            z = torch.tanh(s_unit @ self.state_directions)
            log_beta, log_gamma = log_beta + z @ self.state_beta, log_gamma + z @ self.state_gamma
        log_beta, log_gamma = log_beta.clamp(max=MAX_LOG_RATE), log_gamma.clamp(max=MAX_LOG_RATE)
        return {
            "alpha": self.log_alpha_scale.exp() * F.softplus(pre) + self.min_rate,
            "beta": log_beta.exp() + self.min_rate,
            "gamma": log_gamma.exp() + self.min_rate,
        }

    def forward(self, x: torch.Tensor, sigma=None) -> torch.Tensor:
        r = self.rates(x)
        u, s = x[..., 0], x[..., 1]
        du = r["alpha"] - r["beta"] * u
        ds = r["beta"] * u - r["gamma"] * s
        return torch.stack([du, ds], dim=-1)

    def stationarity_terms(self, x: torch.Tensor, score: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """The field's part of the stationarity residual in closed form, for the plain kinetic variant.

        With A = e^k softplus(p), p = a_u u + a_s s + c, σ = sigmoid(p) and a fixed vector field
        ``score`` (B, G, 2) (the reference's score, held constant):

            ∇·f = Σ_g (e^k σ a_u − β − γ),
            ∂_u(∇·f + f·score) = e^k σ(1−σ) a_u² + (e^k σ a_u − β) score_u + β score_s,
            ∂_s(∇·f + f·score) = e^k σ(1−σ) a_u a_s + e^k σ a_s score_u − γ score_s.

        Returns (f (B, G, 2), ∇·f (B,), ∇(∇·f + f·score) (B, G, 2)), or None for the variants that
        couple genes or cells (the objective then uses autograd).
        """
        if self.regulation is not None or self.state_rank:
            return None
        self._check(x)
        u, s = x[..., 0], x[..., 1]
        scale = self.log_alpha_scale.exp()
        pre = self.a_u * u + self.a_s * s + self.bias
        sig = torch.sigmoid(pre)
        beta, gamma = self.log_beta.exp() + self.min_rate, self.log_gamma.exp() + self.min_rate
        alpha = scale * F.softplus(pre) + self.min_rate
        f = torch.stack([alpha - beta * u, beta * u - gamma * s], -1)
        d_alpha_u, d_alpha_s = scale * sig * self.a_u, scale * sig * self.a_s
        curvature = scale * sig * (1 - sig)
        div = (d_alpha_u - beta - gamma).sum(-1)
        grad_u = curvature * self.a_u**2 + (d_alpha_u - beta) * score[..., 0] + beta * score[..., 1]
        grad_s = curvature * self.a_u * self.a_s + d_alpha_s * score[..., 0] - gamma * score[..., 1]
        return f, div, torch.stack([grad_u, grad_s], -1)

    def penalty(self) -> torch.Tensor:
        """Σ|W_gh| over the regulatory network (0 for the "kinetic" variant)."""
        if self.regulation is None:
            return self.log_beta.new_zeros(())
        return (self.regulation * self.off_diagonal).abs().sum()

    def regulation_matrix(self) -> torch.Tensor:
        """(G, G) W with W_gh the effect of gene h's spliced level on gene g's transcription (zero diagonal)."""
        if self.regulation is None:
            raise FluxMatchError("the 'kinetic' variant has no regulatory network; use variant='regulatory'")
        return (self.regulation * self.off_diagonal).detach().clone()
