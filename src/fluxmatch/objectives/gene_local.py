"""Gene-local Flux Matching: the finite-horizon estimator under a reference that factorises over genes.

For cells x ∈ R^{G×2} (per gene its (u, s) pair) a kernel density over a batch of B = 256 cells
in 2G dimensions is useless: every cell is alone in its kernel. The reference is instead the
product over genes of per-gene kernel densities in the (u, s) plane,

    p_σ(z) = Π_g (1/B) Σ_j N(z_g; x_jg, σ² I_2),

whose score is per gene the batch-smoothed score of that gene's plane (:func:`gene_kernel_score`)
and whose reversible Langevin dynamics run independently per gene. The estimator is then the
finite-horizon one of docs/MATH.md §3 done per gene: start points x0 = x + σε, K exponential-
integrator substeps of the σ²-preconditioned reference dynamics to a horizon t ~ U[0, H], the
stationarity residual r = ∇·u + u·s of u = f − s at the endpoints (Hutchinson divergence), ∇r
carried back to the start points with per-gene transition weights, and the surrogate

    ℓ_i = −2 σ⁴ · u(x0_i) · Ĝ_i,     Ĝ_i = H e^{−t} Σ_j W^g_ij ∇_g r(X_t,j)   (per gene g).

This is exactly the Flux Matching paper's RNA-velocity loss (σ² = 10⁻³, H = 4, K = 4 there);
its gradient, not its value, is meaningful. The per-gene weights are exact for a gene-local
field (each gene's residual depends on that gene's plane only); for a field that couples genes
(a regulatory network) they average the other genes over the batch: a mean-field approximation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..divergence import hutchinson_divergence
from ..errors import FluxMatchError, check_integer, check_positive
from .base import ObjectiveOutput, check_batch

_MIN_RELATIVE_VARIANCE = 1e-3  # floor on 1 − ρ², as in the full-dimensional transition weights
_CHUNK_ENTRIES = 2**18  # kernel weights per gene chunk


def _kernel_weights(q: torch.Tensor, r: torch.Tensor, variance: float, dim: int = -1) -> torch.Tensor:
    """(G, P, R) Gaussian kernel weights between (G, P, 2) and (G, R, 2), per gene, normalised over ``dim``.

    ``softmax(−|q_i − r_j|² / 2v)`` over j (dim = −1) or over i (dim = 1). The squared norm that
    is constant along ``dim`` cancels in the softmax and is never formed: one fused
    multiply-add and one softmax over the (G, P, R) block.
    """
    if dim == -1:
        bias = (-0.5 / variance) * r.square().sum(-1)[:, None, :]
    else:
        bias = (-0.5 / variance) * q.square().sum(-1)[:, :, None]
    return torch.softmax(torch.baddbmm(bias, q, r.transpose(1, 2), alpha=1.0 / variance), dim=dim)


def kernel_average(q: torch.Tensor, r: torch.Tensor, variance: float, values: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """(G, P, C) kernel-weighted averages ``Σ_j w_ij values_j`` per gene, w from :func:`_kernel_weights`.

    q (G, P, 2), r (G, R, 2), values (G, R, C). Genes are taken in chunks of about
    :data:`_CHUNK_ENTRIES` weights, which keeps each block in cache (several times faster than
    one (G, P, R) block on a CPU) and bounds memory for thousands of genes.
    """
    step = max(1, _CHUNK_ENTRIES // max(1, q.shape[1] * r.shape[1]))
    parts = [_kernel_weights(q[g : g + step], r[g : g + step], variance, dim) @ values[g : g + step] for g in range(0, q.shape[0], step)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, 0)


def gene_kernel_score(z: torch.Tensor, ref: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-gene score of the batch-smoothed reference: z (P, G, 2), ref (R, G, 2) → (P, G, 2).

    ``s_g(z) = (Σ_j w_j x_jg − z_g) / σ²`` with ``w = softmax_j(−|z_g − x_jg|² / 2σ²)``, in
    1/[x]. Differentiable in z. Distances are taken about each gene's batch mean (accuracy).
    """
    s2 = sigma * sigma
    center = ref.mean(0, keepdim=True)
    q, r = (z - center).transpose(0, 1), (ref - center).transpose(0, 1)
    return ((kernel_average(q, r, s2, r) - q) / s2).transpose(0, 1)


@dataclass
class GeneKernelMoments:
    """Closed-form local quantities of the per-gene reference at points z (P, G, 2), per gene.

    With v = σ² and w the kernel weights of z_g over the batch: m = E_w[x], C = Cov_w[x],
    T = E_w[(x − m)|x − m|²] (per gene), the score s = (m − z)/v, its Jacobian
    ∇s = (C − v I)/v², its divergence (tr C − 2v)/v² and that divergence's gradient T/v³.

    Attributes:
        score: (P, G, 2) in 1/[x].
        hessian: (P, G, 2, 2) ∇s per gene (symmetric), 1/[x]².
        divergence: (P, G) ∇·s per gene, 1/[x]².
        grad_divergence: (P, G, 2) ∇(∇·s) per gene, 1/[x]³.
    """

    score: torch.Tensor
    hessian: torch.Tensor
    divergence: torch.Tensor
    grad_divergence: torch.Tensor


def gene_kernel_moments(z: torch.Tensor, ref: torch.Tensor, sigma: float) -> GeneKernelMoments:
    """:class:`GeneKernelMoments` of the batch-smoothed per-gene reference (ref (R, G, 2)) at z (P, G, 2).

    One (G, P, R) weight matrix times seven per-point features of the batch (x, the products
    x_a x_b, x|x|²), about each gene's batch mean; no autograd.
    """
    v = sigma * sigma
    center = ref.mean(0, keepdim=True)
    q, r = (z - center).transpose(0, 1), (ref - center).transpose(0, 1)
    sq = r.square().sum(-1, keepdim=True)
    features = torch.cat([r, r[..., :1] * r, r[..., 1:] * r[..., 1:], r * sq, sq], -1)  # (G, R, 8)
    moments = kernel_average(q, r, v, features)
    m, second, third, mean_sq = moments[..., :2], moments[..., 2:5], moments[..., 5:7], moments[..., 7:]
    xx = torch.stack([torch.stack([second[..., 0], second[..., 1]], -1), torch.stack([second[..., 1], second[..., 2]], -1)], -2)
    cov = xx - m[..., :, None] * m[..., None, :]
    xx_m = (xx @ m[..., None])[..., 0]
    t = third - m * mean_sq - 2.0 * xx_m + 2.0 * m * m.square().sum(-1, keepdim=True)
    eye = torch.eye(2, dtype=z.dtype, device=z.device)
    out = GeneKernelMoments(
        score=(m - q) / v,
        hessian=(cov - v * eye) / v**2,
        divergence=(cov.diagonal(dim1=-2, dim2=-1).sum(-1) - 2.0 * v) / v**2,
        grad_divergence=t / v**3,
    )
    return GeneKernelMoments(*(a.transpose(0, 1) for a in (out.score, out.hessian, out.divergence, out.grad_divergence)))


def gene_transport(start: torch.Tensor, ends: torch.Tensor, values: torch.Tensor, shift: torch.Tensor, t: float, sigma: float) -> torch.Tensor:
    """(B, G, 2) estimates of E[e^{−t} v(X_t) | x0_i] per gene from all B endpoints.

    Per gene g the weight of endpoint j for start i is the transition density of the reference
    dynamics, ``N(X_jg; x0_ig + shift_ig, σ²(1 − e^{−2t}) I)``, normalised over the starts i
    (``shift = (1 − e^{−t}) σ² s(x0)``). start, ends, values, shift: (B, G, 2).
    """
    rho = math.exp(-t)
    var = sigma * sigma * max(1.0 - rho * rho, _MIN_RELATIVE_VARIANCE)
    center = ends.mean(0, keepdim=True)
    means = (start + shift - center).transpose(0, 1)
    carried = kernel_average(means, (ends - center).transpose(0, 1), var, values.transpose(0, 1), dim=1)
    return (rho * carried).transpose(0, 1)


class GeneLocalFlux:
    """The gene-local Flux Matching objective (module docstring).

    Args:
        sigma: σ of the per-gene kernels and of the start-point noise (data units), > 0.
        horizon: H, the largest reference-dynamics horizon (relaxation times); t ~ U[0, H].
        substeps: K exponential-integrator substeps to the horizon.
        n_probes: Rademacher probes of the Hutchinson divergence.

    Call: ``objective(field, x, t=None)`` with x (B, G, 2) and ``field(z)`` → (B, G, 2), and the
    horizon t drawn from U[0, H] unless given (t ∈ [0, H]); returns
    :class:`~fluxmatch.objectives.base.ObjectiveOutput` with per-cell surrogate losses (B,) and
    ``terms['residual_rms']``, the RMS of r at the endpoints.

    Example:
        >>> from fluxmatch.fields.kinetics import KineticField
        >>> out = GeneLocalFlux(sigma=0.1)(KineticField(3), torch.rand(32, 3, 2))
        >>> out.loss.shape
        torch.Size([32])
    """

    name = "gene_local_flux"

    def __init__(self, sigma: float = math.sqrt(1e-3), horizon: float = 4.0, substeps: int = 4, n_probes: int = 1) -> None:
        self.sigma = check_positive(sigma, "σ")
        self.horizon = check_positive(horizon, "horizon")
        self.substeps = check_integer(substeps, "substeps")
        self.n_probes = check_integer(n_probes, "n_probes")

    @property
    def config(self) -> dict:
        return {"name": self.name, "sigma": self.sigma, "horizon": self.horizon, "substeps": self.substeps, "n_probes": self.n_probes}

    def _rollout(self, x0: torch.Tensor, ref: torch.Tensor, t: float) -> torch.Tensor:
        """Endpoints X_t of the σ²-preconditioned reference Langevin dynamics from x0 (no grad)."""
        h = t / self.substeps
        rho = math.exp(-h)
        noise = self.sigma * math.sqrt(max(1.0 - rho * rho, 0.0))
        z = x0
        for _ in range(self.substeps):
            z = z + (1.0 - rho) * self.sigma**2 * gene_kernel_score(z, ref, self.sigma) + noise * torch.randn_like(z)
        return z

    def _residual_gradient(self, field, ends: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """∇r at the endpoints (B, G, 2) and r itself (B,), for u = f − s.

        ``∇r = ∇(∇·f) + (∂f)ᵀ s − ∇(∇·s) + ∇s (f − 2s)``: the reference's terms in closed form
        (:func:`gene_kernel_moments`); the field's from its ``stationarity_terms`` when it has
        closed forms (the plain kinetic field: exact, no probe noise), else by autograd with a
        Hutchinson divergence.
        """
        ref_terms = gene_kernel_moments(ends, ref, self.sigma)
        s = ref_terms.score
        closed = getattr(field, "stationarity_terms", None)
        with torch.no_grad():
            terms = closed(ends, s) if closed is not None else None
        if terms is not None:
            f, div_f, grad_field = terms
        else:
            with torch.enable_grad():
                z = ends.detach().requires_grad_(True)
                f = field(z)
                div_f = hutchinson_divergence(f, z, self.n_probes, create_graph=True)
                (grad_field,) = torch.autograd.grad((div_f + (f * s).sum((1, 2))).sum(), z)
        f = f.detach()
        curvature = (ref_terms.hessian @ (f - 2.0 * s)[..., None])[..., 0]
        grad = grad_field - ref_terms.grad_divergence + curvature
        r = div_f.detach() - ref_terms.divergence.sum(1) + ((f - s) * s).sum((1, 2))
        return grad, r

    def __call__(self, field, x: torch.Tensor, t: float | None = None) -> ObjectiveOutput:
        x = x if isinstance(x, torch.Tensor) and x.dtype == torch.float64 and bool(torch.isfinite(x).all()) else check_batch(x)
        if x.ndim != 3 or x.shape[-1] != 2:
            raise FluxMatchError(f"gene-local Flux Matching takes cells as (B, G, 2) = (u, s) per gene, got {tuple(x.shape)}")
        ref = x.detach()
        if t is None:
            t = float(torch.rand(())) * self.horizon
        elif not 0.0 <= float(t) <= self.horizon:
            raise FluxMatchError(f"the horizon t must lie in [0, {self.horizon}], got {t}")
        x0 = ref + self.sigma * torch.randn_like(ref)
        with torch.no_grad():
            score0 = gene_kernel_score(x0, ref, self.sigma)
            ends = self._rollout(x0, ref, t)
        grad_r, r = self._residual_gradient(field, ends, ref)
        with torch.no_grad():
            shift = (1.0 - math.exp(-t)) * self.sigma**2 * score0
            carried = self.horizon * gene_transport(x0, ends, grad_r, shift, t, self.sigma)
        u0 = field(x0) - score0
        loss = -2.0 * self.sigma**4 * (u0 * carried).sum((1, 2))
        return ObjectiveOutput(loss, {"residual_rms": float(r.square().mean().sqrt()), "horizon_t": t})
