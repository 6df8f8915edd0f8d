"""Exact stationary fields of a known density: the two families of docs/MATH.md §1.

For any density p with score s, both leave p stationary under dX = f dt + sqrt(2) dW:

- ``f = (I + J) s`` with J a constant antisymmetric matrix: ∇·(p J s) = Σ_ij J_ij ∂_i∂_j p = 0.
  The classic non-reversible Langevin sampler.
- ``f = s + u`` with ``u = (1/p) ∇·(p A)`` for a smooth antisymmetric matrix field A(x), the
  divergence taken over the second index:

      u_i = (1/p) Σ_j ∂_j (p A_ij) = Σ_j ∂_j A_ij + Σ_j A_ij s_j,

  so that ∇·(p u) = Σ_ij ∂_i∂_j (p A_ij) = 0 by antisymmetry. A constant A = J gives the first
  family back.

They are ground truth for tests and studies: residual r = ∇·u + u·s ≡ 0, zero flux-objective
gradient, and the score part s and flux part u known exactly.

Both are called ``f(x, c=None)``. By default they ignore c and are stationary for the mixture
they were built on (what a fixed-σ objective with that mixture as its reference expects). With
``smooth=True``, c is a noise level σ and the field is the same construction on the smoothed
mixture p_σ = p * N(0, σ²I) (c None: p itself), so it can stand in for a trained σ-conditioned
field in the noise-schedule samplers. They are differentiable in x (the score goes through
autograd of log p when x requires grad), so divergence and Jacobian diagnostics apply to them.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import FluxMatchError, check_positive
from ..reference import GaussianMixture


def _check_antisymmetric(j: torch.Tensor, name: str) -> torch.Tensor:
    if j.ndim != 2 or j.shape[0] != j.shape[1]:
        raise FluxMatchError(f"{name} must be a square (d, d) matrix, got shape {tuple(j.shape)}")
    if not torch.isfinite(j).all():
        raise FluxMatchError(f"{name} contains NaN or inf")
    if not torch.allclose(j, -j.T, atol=1e-6 * (1 + float(j.abs().max()))):
        raise FluxMatchError(f"{name} must be antisymmetric (J = −Jᵀ)")
    return j


def _density(mixture: GaussianMixture, c, smooth: bool) -> GaussianMixture:
    """p, or p smoothed by the σ in c (one value for the whole call) when ``smooth``."""
    if not smooth or c is None:
        return mixture
    sigma = torch.as_tensor(c).reshape(-1)
    if sigma.numel() == 0 or not bool((sigma == sigma[0]).all()):
        raise FluxMatchError("a smoothed analytic field takes one σ per call, as the samplers give")
    return mixture.smoothed(float(sigma[0]))


def mixture_score(mixture: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    """s(x) = ∇log p(x) for x (B, d), in x's dtype (units 1/data).

    Closed form when x does not require grad; otherwise autograd of log p with create_graph,
    so that the result can be differentiated in x again."""
    if x.ndim != 2 or x.shape[1] != mixture.dim:
        raise FluxMatchError(f"points must have shape (B, {mixture.dim}), got {tuple(x.shape)}")
    if not x.requires_grad:
        return mixture.score(x).to(x.dtype)
    (s,) = torch.autograd.grad(mixture.log_prob(x).sum(), x, create_graph=True)
    return s.to(x.dtype)


class NonreversibleScore(nn.Module):
    """``f(x) = (I + J) s(x)`` on a :class:`~fluxmatch.reference.GaussianMixture` p.

    Args:
        mixture: the density p (d-dimensional).
        J: (d, d) constant antisymmetric matrix (checked).
        smooth: treat c as σ and use p_σ (see the module docstring); else c is ignored.

    Shapes: x (B, d) → (B, d), units 1/data.

    Example:
        >>> f = NonreversibleScore(GaussianMixture(torch.zeros(1, 2), 1.0), [[0.0, 2.0], [-2.0, 0.0]])
    """

    def __init__(self, mixture: GaussianMixture, J, smooth: bool = False) -> None:
        super().__init__()
        self.mixture = mixture
        self.smooth = bool(smooth)
        J = torch.as_tensor(J, dtype=mixture.means.dtype)
        if J.ndim != 2 or J.shape != (mixture.dim, mixture.dim):
            raise FluxMatchError(f"J must be ({mixture.dim}, {mixture.dim}) for this mixture, got shape {tuple(J.shape)}")
        self.register_buffer("J", _check_antisymmetric(J, "J"))

    def score(self, x: torch.Tensor, c=None) -> torch.Tensor:
        """The reversible part s (B, d)."""
        return mixture_score(_density(self.mixture, c, self.smooth), x)

    def flux(self, x: torch.Tensor, c=None) -> torch.Tensor:
        """The divergence-free (under p) part u = J s (B, d)."""
        return self.score(x, c) @ self.J.T.to(x.dtype)

    def forward(self, x: torch.Tensor, c=None) -> torch.Tensor:
        s = self.score(x, c)
        return s + s @ self.J.T.to(x.dtype)


class BumpRotation(nn.Module):
    """An example antisymmetric matrix field: ``A(x) = strength · Σ_k exp(−|x − c_k|²/(2ℓ²)) · J``.

    J = e_a e_bᵀ − e_b e_aᵀ rotates in the plane (a, b) = ``plane``. With one centre at the
    origin this gives ``u = J(∇a + a s)``, a rotation that fades away from the centre; with the
    mixture's means as centres, a local swirl around each component.

    Args:
        centers: (K, d) bump centres (data units).
        length: ℓ > 0, bump width (data units).
        strength: amplitude (units data²/time: pA is a flux potential).
        plane: the two coordinates the rotation mixes.

    Shapes: x (B, d) → (B, d, d).
    """

    def __init__(self, centers, length: float = 1.0, strength: float = 1.0, plane: tuple[int, int] = (0, 1)) -> None:
        super().__init__()
        centers = torch.as_tensor(centers, dtype=torch.float64)
        if centers.ndim == 1:
            centers = centers[None]
        if centers.ndim != 2 or centers.shape[0] == 0:
            raise FluxMatchError(f"bump centres must be (K, d), got shape {tuple(centers.shape)}")
        d = centers.shape[1]
        if d < 2:
            raise FluxMatchError(f"a rotation needs d ≥ 2 coordinates, got {d}")
        a, b = (int(i) for i in plane)
        if not (0 <= a < d and 0 <= b < d and a != b):
            raise FluxMatchError(f"the rotation plane must be two distinct coordinates below {d}, got {plane}")
        J = torch.zeros(d, d, dtype=torch.float64)
        J[a, b], J[b, a] = 1.0, -1.0
        self.register_buffer("centers", centers)
        self.register_buffer("J", J)
        self.length = check_positive(length, "the bump length")
        self.strength = float(strength)

    def amplitude(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) scalar a(x) = strength · Σ_k exp(−|x − c_k|²/(2ℓ²))."""
        sq = (x[:, None, :] - self.centers.to(x.dtype)[None]).square().sum(2)
        return self.strength * torch.exp(-0.5 * sq / self.length**2).sum(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.amplitude(x)[:, None, None] * self.J.to(x.dtype)


def matrix_divergence(A, x: torch.Tensor) -> torch.Tensor:
    """(∇·A)_i = Σ_j ∂A_ij/∂x_j at x (B, d) → (B, d), by autograd (units [A]/data).

    For each column j, ∂_j A_{·j} is the Jacobian-vector product of x ↦ A(x)_{·j} with e_j,
    taken as the transpose of a vector-Jacobian product (two backward passes; 2d in all).
    Differentiable in x when x requires grad."""
    keep = x.requires_grad
    with torch.enable_grad():
        z = x if keep else x.detach().requires_grad_(True)
        a = A(z)
        b, d = z.shape
        if a.shape != (b, d, d):
            raise FluxMatchError(f"A(x) must return (B, d, d) = {(b, d, d)} matrices, got {tuple(a.shape)}")
        if not a.requires_grad:  # constant A
            return torch.zeros_like(z)
        out = torch.zeros_like(z)
        for j in range(d):
            w = torch.zeros(b, d, dtype=z.dtype, device=z.device, requires_grad=True)
            (vjp,) = torch.autograd.grad(a[:, :, j], z, w, create_graph=True, materialize_grads=True)  # (A_{·j})'ᵀ w
            basis = torch.zeros_like(z)
            basis[:, j] = 1.0
            (col,) = torch.autograd.grad(vjp, w, basis, create_graph=keep, materialize_grads=True)  # ∂_j A_{·j}
            out = out + col
    return out if keep else out.detach()


class AntisymmetricFlux(nn.Module):
    """``f = s + u``, ``u_i = Σ_j ∂_j A_ij + Σ_j A_ij s_j`` = ((1/p)∇·(pA))_i, on a mixture p.

    Args:
        mixture: the density p (d-dimensional).
        A: callable x (B, d) → (B, d, d) antisymmetric matrices, differentiable (torch ops);
            default :class:`BumpRotation` about the origin with ℓ = 1 and strength 1.
        smooth: treat c as σ and use p_σ (A does not depend on σ); else c is ignored.

    Shapes: x (B, d) → (B, d), units 1/data. Antisymmetry of A(x) is checked at
    every call. Cost: 2d backward passes for ∇·A.
    """

    def __init__(self, mixture: GaussianMixture, A=None, smooth: bool = False) -> None:
        super().__init__()
        self.mixture = mixture
        self.smooth = bool(smooth)
        self.A = A if A is not None else BumpRotation(torch.zeros(1, mixture.dim))

    def flux(self, x: torch.Tensor, c=None) -> torch.Tensor:
        """The divergence-free (under p) part u (B, d)."""
        a = self.A(x)
        if not torch.allclose(a, -a.transpose(1, 2), atol=1e-6 * (1 + float(a.detach().abs().max()))):
            raise FluxMatchError("A(x) must return antisymmetric matrices (A = −Aᵀ)")
        s = mixture_score(_density(self.mixture, c, self.smooth), x)
        return matrix_divergence(self.A, x) + torch.einsum("bij,bj->bi", a, s)

    def forward(self, x: torch.Tensor, c=None) -> torch.Tensor:
        return mixture_score(_density(self.mixture, c, self.smooth), x) + self.flux(x, c)


__all__ = ["NonreversibleScore", "AntisymmetricFlux", "BumpRotation", "matrix_divergence", "mixture_score"]
