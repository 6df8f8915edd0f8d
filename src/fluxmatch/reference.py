"""Reference densities: the distribution a field must leave stationary (docs/MATH.md §3).

Both references are isotropic Gaussian mixtures

    p(z) = Σ_k π_k N(z; μ_k, v_k I),        z ∈ R^d,

and everything the Flux Matching estimator needs from them has a closed form:
the score, its divergence, the gradient of that divergence and Hessian-vector products.
No autograd runs through a reference, which is what makes the estimator cheap.

- :class:`GaussianMixture`: an analytic mixture (tests, toy experiments), optionally smoothed
  by N(0, σ²I) (``v_k → v_k + σ²``).
- :class:`EmpiricalGaussian`: the minibatch ``x_1..x_B`` smoothed by N(0, σ²I), i.e. the mixture
  with ``μ_k = x_k``, ``v_k = σ²``, ``π_k = 1/B``. Works for any event shape (vectors, images):
  points are flattened internally and results come back in the caller's shape.

All pairwise work is O(P·K·d) and done in row chunks so that memory stays bounded
(``chunk_elements`` entries of a P×K matrix at a time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import FluxMatchError, check_sigma

_CHUNK_ELEMENTS = 2**22
_SECOND_MOMENT_MAX_DIM = 8


@dataclass
class ScoreDerivatives:
    """Closed-form local quantities of log p at points z (flattened to (P, d)).

    Attributes:
        score: (P, d) ∇log p(z).
        divergence: (P,) ∇·s(z) = Δ log p(z).
        grad_divergence: (P, d) ∇(∇·s)(z).
        hessian_score: (P, d) ∇s(z) · s(z) = ½∇|s|² (∇s is the Hessian of log p, symmetric).
        hessian_v: (P, d) ∇s(z) · v for the vector v given to :meth:`GaussianMixture.derivatives`,
            or None when no v was given.
    """

    score: torch.Tensor
    divergence: torch.Tensor
    grad_divergence: torch.Tensor
    hessian_score: torch.Tensor
    hessian_v: torch.Tensor | None = None


@dataclass
class ComponentDraw:
    """Points drawn from a mixture together with the component that produced each.

    ``x = mean + sqrt(variance) · noise``, shapes (n, d), (n, d), (n,), (n, d).
    """

    x: torch.Tensor
    mean: torch.Tensor
    variance: torch.Tensor
    noise: torch.Tensor


def _sqdist(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """(P, K) squared distances |a_i − b_k|², clamped at 0 against round-off."""
    return torch.addmm(a.square().sum(1, keepdim=True) + b_sq, a, b.T, alpha=-2.0).clamp_min(0.0)


class GaussianMixture:
    """Isotropic Gaussian mixture ``p(z) = Σ_k π_k N(z; μ_k, v_k I)``.

    Args:
        means: (K, d) component means.
        variances: (K,) or scalar, component variances v_k > 0 (units of z²).
        weights: (K,) mixture weights π_k ≥ 0 (normalised here); uniform if None.
        chunk_elements: largest P×K block held in memory at once.

    Example:
        >>> gm = GaussianMixture(torch.tensor([[-2., 0.], [2., 0.]]), 0.25)
        >>> z = gm.sample(1000)
        >>> gm.score(z).shape
        torch.Size([1000, 2])
    """

    def __init__(
        self,
        means: torch.Tensor,
        variances: torch.Tensor | float,
        weights: torch.Tensor | None = None,
        chunk_elements: int = _CHUNK_ELEMENTS,
    ) -> None:
        means = torch.as_tensor(means)
        means = means.to(torch.float64 if means.dtype == torch.float64 else torch.float32)  # float64 kept for precision
        if means.ndim != 2 or means.shape[0] == 0:
            raise FluxMatchError(f"mixture means must have shape (K, d) with K ≥ 1, got {tuple(means.shape)}")
        if not torch.isfinite(means).all():
            raise FluxMatchError("mixture means contain NaN or inf")
        k = means.shape[0]
        variances = torch.as_tensor(variances, dtype=means.dtype, device=means.device).reshape(-1)
        if variances.numel() == 1:
            variances = variances.expand(k).clone()
        if variances.shape != (k,) or not bool((variances > 0).all()) or not torch.isfinite(variances).all():
            raise FluxMatchError("mixture variances must be positive and finite, one per component or one for all")
        if weights is None:
            weights = torch.full((k,), 1.0 / k, dtype=means.dtype, device=means.device)
        weights = torch.as_tensor(weights, dtype=means.dtype, device=means.device).reshape(-1)
        if weights.shape != (k,) or bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise FluxMatchError("mixture weights must be K non-negative numbers with a positive sum")
        self.means = means
        self.variances = variances
        self.weights = weights / weights.sum()
        self.chunk_elements = chunk_elements
        self._log_weights = self.weights.clamp_min(1e-38).log()
        self._means_sq = means.square().sum(1)[None]
        self._shared_variance = bool((variances == variances[0]).all())
        self._center = means.mean(0)
        self._features: torch.Tensor | None = None

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    def smoothed(self, sigma: float) -> GaussianMixture:
        """The mixture convolved with N(0, σ²I): ``v_k → v_k + σ²``."""
        sigma = check_sigma(sigma)
        return GaussianMixture(self.means, self.variances + sigma**2, self.weights, self.chunk_elements)

    # -- pointwise quantities -------------------------------------------------------------------

    def _flat(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.reshape(z.shape[0], -1).to(self.means.dtype)
        if flat.shape[1] != self.dim:
            raise FluxMatchError(
                f"points of shape {tuple(z.shape[1:])} have {flat.shape[1]} coordinates, "
                f"the reference density has {self.dim}"
            )
        return flat

    def _log_joint(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(P, K) log π_k N(z; μ_k, v_k) and the (P, K) squared distances."""
        sq = _sqdist(z, self.means, self._means_sq)
        v = self.variances
        log_joint = self._log_weights - 0.5 * sq / v - 0.5 * self.dim * torch.log(2 * math.pi * v)
        return log_joint, sq

    def _chunks(self, n: int):
        step = max(1, self.chunk_elements // max(1, self.n_components))
        for start in range(0, n, step):
            yield slice(start, min(n, start + step))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z), shape (P,) for z of shape (P, ...). Differentiable in z."""
        flat = self._flat(z)
        return torch.cat([torch.logsumexp(self._log_joint(flat[r])[0], 1) for r in self._chunks(flat.shape[0])])

    def posterior(self, z: torch.Tensor) -> torch.Tensor:
        """(P, K) responsibilities w_k(z) = P(component k | z). Dense: use on small P·K."""
        flat = self._flat(z)
        return torch.cat([torch.softmax(self._log_joint(flat[r])[0], 1) for r in self._chunks(flat.shape[0])])

    def score(self, z: torch.Tensor) -> torch.Tensor:
        """∇log p(z), same shape as z: ``Σ_k w_k(z)(μ_k − z)/v_k``."""
        flat = self._flat(z).detach()
        out = torch.empty_like(flat)
        inv_v = 1.0 / self.variances
        for rows in self._chunks(flat.shape[0]):
            zc = flat[rows]
            if self._shared_variance:
                zc = zc - self._center
                out[rows] = (self._shared_responsibilities(zc) @ (self.means - self._center) - zc) * inv_v[0]
            else:
                wv = torch.softmax(self._log_joint(zc)[0], 1) * inv_v
                out[rows] = wv @ self.means - zc * wv.sum(1, keepdim=True)
        return out.reshape(z.shape)

    def derivatives(self, z: torch.Tensor, v: torch.Tensor | None = None) -> ScoreDerivatives:
        """Score, its divergence, the gradient of the divergence and ∇s·v at z, in closed form.

        With responsibilities w_k, component scores a_k = (μ_k − z)/v_k and s = Σ w_k a_k:

            ∇s        = Σ_k w_k a_k a_kᵀ − s sᵀ − (Σ_k w_k / v_k) I
            ∇·s       = Σ_k w_k |a_k|² − |s|² − d Σ_k w_k / v_k
            ∇(∇·s)    = Σ_k w_k (a_k − s)(|a_k|² − d / v_k) − 2 Σ_k w_k a_k / v_k − 2 (∇s) s

        When all components share one variance v (the batch reference) these reduce to moments
        of the responsibilities, m = Σ w_k μ_k and C = Σ w_k (μ_k − m)(μ_k − m)ᵀ:
        s = (m − z)/v, ∇s = C/v² − I/v, ∇·s = tr C/v² − d/v, ∇(∇·s) = Σ_k w_k |μ_k − m|²(μ_k − m)/v³,
        all read off one product of the P×K responsibilities with per-component features.

        Args:
            z: (P, ...) points, flattened to (P, d).
            v: optional (P, ...) vectors for the Hessian-vector product.

        Returns:
            :class:`ScoreDerivatives` with tensors in flattened (P, d) / (P,) shape.
        """
        flat = self._flat(z).detach()
        vflat = None if v is None else v.detach().reshape(flat.shape)
        if self._shared_variance:
            return self._derivatives_shared(flat, vflat)
        return self._derivatives_general(flat, vflat)

    def _shared_features(self) -> torch.Tensor:
        """(K, F) per-component features [μ, |μ|²μ, |μ|², vec(μμᵀ) if d ≤ 8] (centred means)."""
        if self._features is None:
            mu = self.means - self._center
            mu_sq = mu.square().sum(1, keepdim=True)
            parts = [mu, mu_sq * mu, mu_sq]
            if self.dim <= _SECOND_MOMENT_MAX_DIM:
                parts.append((mu[:, :, None] * mu[:, None, :]).reshape(len(mu), -1))
            self._features = torch.cat(parts, 1)
        return self._features

    def _shared_responsibilities(self, zc: torch.Tensor) -> torch.Tensor:
        """(Pc, K) responsibilities for centred points, by one fused matrix product."""
        v = float(self.variances[0])
        mu = self.means - self._center
        bias = self._log_weights - 0.5 * mu.square().sum(1) / v  # the |z|² term cancels in the softmax
        return torch.softmax(torch.addmm(bias[None], zc, mu.T, alpha=1.0 / v), 1)

    def _derivatives_shared(self, flat: torch.Tensor, vflat: torch.Tensor | None) -> ScoreDerivatives:
        p, d = flat.shape
        v = float(self.variances[0])
        feats = self._shared_features()
        mu = self.means - self._center
        out = {k: torch.empty_like(flat) for k in ("score", "grad_div", "hs")}
        div = flat.new_empty(p)
        hv = None if vflat is None else torch.empty_like(flat)
        for rows in self._chunks(p):
            zc = flat[rows] - self._center
            w = self._shared_responsibilities(zc)
            moments = w @ feats
            m, third, q2 = moments[:, :d], moments[:, d : 2 * d], moments[:, 2 * d]
            vectors = [m, (m - zc) / v] + ([] if vflat is None else [vflat[rows]])
            if d <= _SECOND_MOMENT_MAX_DIM:
                second = moments[:, 2 * d + 1 :].reshape(-1, d, d)  # Σ w μμᵀ
                m2x = [(second @ x[:, :, None])[:, :, 0] for x in vectors]
            else:  # Σ_k w_k μ_k (μ_k·x) without forming d×d matrices
                xs = torch.stack(vectors, 1)  # (Pc, n, d)
                m2x = list(((xs @ mu.T) * w[:, None, :] @ mu).unbind(1))
            m_sq = m.square().sum(1, keepdim=True)

            def cov_times(x: torch.Tensor, m2x_: torch.Tensor) -> torch.Tensor:
                return m2x_ - m * (m * x).sum(1, keepdim=True)

            s = vectors[1]
            hs = cov_times(s, m2x[1]) / v**2 - s / v
            out["score"][rows] = s
            out["hs"][rows] = hs
            div[rows] = (q2 - m_sq[:, 0]) / v**2 - d / v
            out["grad_div"][rows] = (third - 2 * m2x[0] - m * q2[:, None] + 2 * m_sq * m) / v**3
            if hv is not None:
                hv[rows] = cov_times(vectors[2], m2x[2]) / v**2 - vectors[2] / v
        return ScoreDerivatives(out["score"], div, out["grad_div"], out["hs"], hv)

    def _derivatives_general(self, z: torch.Tensor, v: torch.Tensor | None) -> ScoreDerivatives:
        """Any component variances: O(P·K·d) per quantity, several P×K passes."""
        flat = z
        vflat = v
        p, d = flat.shape
        score = torch.empty_like(flat)
        div = flat.new_empty(p)
        grad_div = torch.empty_like(flat)
        hs = torch.empty_like(flat)
        hv = None if v is None else torch.empty_like(flat)
        inv_v = 1.0 / self.variances  # (K,)
        means_over_v = self.means * inv_v[:, None]  # (K, d)
        for rows in self._chunks(p):
            zc = flat[rows]
            log_joint, sq = self._log_joint(zc)
            w = torch.softmax(log_joint, 1)  # (Pc, K)
            wv = w * inv_v  # w_k / v_k
            wv_sum = wv.sum(1, keepdim=True)  # Σ w_k / v_k
            # Σ_k c_ik a_ik for a (Pc, K) coefficient matrix c, with a_ik = (μ_k − z_i)/v_k
            def weighted_a(c: torch.Tensor) -> torch.Tensor:
                return c @ means_over_v - zc * (c * inv_v).sum(1, keepdim=True)

            s = weighted_a(w)
            a_sq = sq * inv_v.square()  # |a_ik|²
            s_sq = s.square().sum(1)
            div_c = (w * a_sq).sum(1) - s_sq - d * wv_sum[:, 0]

            def hess_times(x: torch.Tensor) -> torch.Tensor:
                # ∇s·x = Σ_k w_k a_k (a_k·x) − s (s·x) − (Σ w_k/v_k) x
                a_dot_x = (x @ means_over_v.T - (zc * x).sum(1, keepdim=True) * inv_v)  # (Pc, K)
                return weighted_a(w * a_dot_x) - s * (s * x).sum(1, keepdim=True) - wv_sum * x

            e = w * (a_sq - d * inv_v)
            hs_c = hess_times(s)
            grad_div_c = weighted_a(e) - s * e.sum(1, keepdim=True) - 2 * weighted_a(wv) - 2 * hs_c
            score[rows], div[rows], grad_div[rows], hs[rows] = s, div_c, grad_div_c, hs_c
            if hv is not None:
                hv[rows] = hess_times(vflat[rows])
        return ScoreDerivatives(score, div, grad_div, hs, hv)

    # -- sampling -------------------------------------------------------------------------------

    def sample_components(self, n: int, generator: torch.Generator | None = None) -> ComponentDraw:
        """Draw n points, returning each point's component mean, variance and unit noise."""
        if n <= 0:
            raise FluxMatchError(f"number of samples must be positive, got {n}")
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype, device=self.means.device)
        mean, var = self.means[idx], self.variances[idx]
        return ComponentDraw(mean + var.sqrt()[:, None] * noise, mean, var, noise)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, d) samples."""
        return self.sample_components(n, generator).x


class EmpiricalGaussian(GaussianMixture):
    """The batch-smoothed empirical density ``p_σ(z) = (1/B) Σ_j N(z; x_j, σ²I)``.

    Args:
        batch: (B, ...) data points of any event shape.
        sigma: smoothing standard deviation σ > 0 (data units).

    Its score is ``(Σ_j w_j(z) x_j − z)/σ²`` with ``w = softmax_j(−|z − x_j|²/2σ²)``.
    :meth:`sample_components` draws the start points ``x_j + σ ε_j`` of the estimator, one per
    batch element in batch order, so that the component of start point j is x_j itself.
    """

    def __init__(self, batch: torch.Tensor, sigma: float, chunk_elements: int = _CHUNK_ELEMENTS) -> None:
        sigma = check_sigma(sigma)
        if batch.ndim < 2 or batch.shape[0] == 0:
            raise FluxMatchError(f"a batch must have shape (B, ...) with B ≥ 1, got {tuple(batch.shape)}")
        self.event_shape = tuple(batch.shape[1:])
        self.sigma = float(sigma)
        flat = batch.detach().reshape(batch.shape[0], -1).to(torch.float64 if batch.dtype == torch.float64 else torch.float32)
        super().__init__(flat, self.sigma**2, None, chunk_elements)

    def sample_components(self, n: int | None = None, generator: torch.Generator | None = None) -> ComponentDraw:
        """Start points ``x_j + σ ε_j`` for every batch element (n, if given, must equal B)."""
        b = self.n_components
        if n is not None and n != b:
            raise FluxMatchError(f"an empirical reference draws one start point per batch element ({b}), not {n}")
        noise = torch.randn(self.means.shape, generator=generator, dtype=self.means.dtype, device=self.means.device)
        return ComponentDraw(self.means + self.sigma * noise, self.means, self.variances, noise)



def grouped_denoising_target(batch: torch.Tensor, sigma: float, group_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Start points ``x0_j = x_j + σε_j`` and a Rao-Blackwellised denoising target for each.

    The batch is split at random into G equal groups of about ``group_size`` points; each start
    point's target is the exact score of the σ-smoothed mixture of its own group,
    ``Σ_{k∈S} w_k(x0)(x_k − x0)/σ²``. Given its group S and x0, the generating index j is a
    uniform member of S a priori, so this is ``E[−ε_j/σ | S, x0]``: the same expectation as the
    denoising target −ε/σ with less variance, at cost O(B·|S|·d) instead of O(B²·d).
    ``group_size=None`` (or a size that does not split B evenly) uses the whole batch.

    Args:
        batch: (B, ...) data points.
        sigma: smoothing σ > 0.
        group_size: target group size.

    Returns:
        x0 and the target, both shaped like ``batch``.
    """
    sigma = check_sigma(sigma)
    b = batch.shape[0]
    groups = 1 if group_size is None else max(1, math.ceil(b / group_size))
    if groups == 1 or b % groups:
        reference = EmpiricalGaussian(batch, sigma)
        x0 = reference.sample_components().x.reshape(batch.shape)
        return x0, reference.score(x0)
    flat = batch.detach().reshape(b, -1).float()
    x = flat[torch.randperm(b, device=flat.device)].reshape(groups, b // groups, -1)  # (G, M, d)
    x0 = x + sigma * torch.randn_like(x)
    center = x.mean(1, keepdim=True)
    xc, zc = x - center, x0 - center
    bias = -0.5 * xc.square().sum(2)[:, None, :] / sigma**2  # (G, 1, M): the |z|² term cancels
    w = torch.softmax(torch.baddbmm(bias, zc, xc.transpose(1, 2), alpha=1.0 / sigma**2), dim=2)
    target = (torch.bmm(w, xc) - zc) / sigma**2
    return x0.reshape(batch.shape), target.reshape(batch.shape)


def annealed_denoising_target(
    batch: torch.Tensor,
    sigma: torch.Tensor,
    labels: torch.Tensor | None = None,
    null_label: int | None = None,
    rao_blackwell: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Start points ``x0_i = x_i + σ_i ε_i`` with one σ per row, and a score target for each.

    ``rao_blackwell=False``: the denoising target −ε_i/σ_i. ``True``: its posterior mean over
    the batch, the exact score of the σ_i-smoothed batch at x0_i,
    ``−ε_i/σ_i + Σ_j w_ij (x_j − x_i)/σ_i²`` with ``w_i· = softmax_j(−|x0_i − x_j|²/2σ_i²)``.
    Each row has its own σ (the rows share only the distance matrix), and the logits are formed
    relative to the row's own point, ``−|x_i − x_j|²/2σ_i² − ε_i·(x_i − x_j)/σ_i``, so nothing
    cancels catastrophically at small σ. With ``labels`` each row's posterior runs over the
    points of its own class (rows labelled ``null_label`` run over the whole batch): the score
    of the class-conditional p_σ(x | y).

    Shapes: batch (B, ...) data units; sigma (B,); labels (B,) or None. Cost O(B²·d) in float64
    for the distances. Returns x0 and the target (units 1/data), both shaped like ``batch``.
    """
    b = batch.shape[0]
    flat = batch.reshape(b, -1)
    sigma = sigma.to(flat.dtype).reshape(b, 1)
    eps = torch.randn(flat.shape, generator=generator, dtype=flat.dtype, device=flat.device)
    x0 = flat + sigma * eps
    target = -eps / sigma
    if not rao_blackwell or b == 1:
        return x0.reshape(batch.shape), target.reshape(batch.shape)
    x64 = (flat - flat.mean(0)).double()
    sq = x64.square().sum(1)
    dist = (sq[:, None] + sq[None, :] - 2.0 * x64 @ x64.T).clamp_min(0.0)  # |x_i − x_j|²
    eps64 = eps.double()
    cross = (eps64 * x64).sum(1, keepdim=True) - eps64 @ x64.T  # ε_i·(x_i − x_j)
    s64 = sigma.double()
    logits = -dist / (2 * s64.square()) - cross / s64
    logits.diagonal().zero_()
    if labels is not None:
        same = labels[:, None] == labels[None, :]
        if null_label is not None:
            same = same | (labels == null_label)[:, None]
        logits = logits.masked_fill(~same, float("-inf"))
    w = torch.softmax(logits, dim=1)
    w.diagonal().zero_()  # Σ_j w_ij (x_j − x_i): the own term contributes nothing
    pull = (w @ x64 - w.sum(1, keepdim=True) * x64) / s64.square()
    target = target + pull.to(flat.dtype)
    return x0.reshape(batch.shape), target.reshape(batch.shape)


def training_set_target(
    x0: torch.Tensor,
    sigma: torch.Tensor,
    data: torch.Tensor,
    labels: torch.Tensor | None = None,
    data_labels: torch.Tensor | None = None,
    null_label: int | None = None,
    chunk: int = 4096,
) -> torch.Tensor:
    """The exact score of the whole data set smoothed by N(0, σ_i² I), at each x0_i.

    ``s(x0_i) = (Σ_j w_ij x_j − x0_i)/σ_i²`` with ``w_i· = softmax_j(−|x0_i − x_j|²/2σ_i²)`` over
    all N data points (over the points of the row's class when ``labels`` are given; rows
    labelled ``null_label`` use every point). When x0_i = x + σ_i ε with x drawn from the data, this
    is E[−ε/σ_i | x0_i] exactly: the denoising target with all its variance removed.

    Shapes: x0 (B, ...), sigma (B,), data (N, ...) with the same entries per point; float64
    inside, chunked over the data. Returns a tensor shaped like x0 (units 1/data).
    """
    b = x0.shape[0]
    z = x0.reshape(b, -1).double()
    pts = data.reshape(data.shape[0], -1).to(z)
    center = pts.mean(0)
    z, pts = z - center, pts - center
    s2 = sigma.double().reshape(b, 1).square()
    z_sq = z.square().sum(1, keepdim=True)
    best = torch.full((b, 1), float("-inf"), dtype=z.dtype, device=z.device)
    total = torch.zeros((b, 1), dtype=z.dtype, device=z.device)
    mean = torch.zeros_like(z)
    for start in range(0, pts.shape[0], chunk):
        block = pts[start : start + chunk]
        logits = -(z_sq + block.square().sum(1)[None] - 2 * z @ block.T).clamp_min(0) / (2 * s2)
        if labels is not None and data_labels is not None:
            same = labels[:, None] == data_labels[start : start + chunk][None].to(labels.device)
            if null_label is not None:
                same = same | (labels == null_label)[:, None]
            logits = logits.masked_fill(~same, float("-inf"))
        new_best = torch.maximum(best, logits.max(1, keepdim=True).values)
        scale = torch.exp(best - new_best).nan_to_num(0.0)
        weights = torch.exp(logits - new_best)
        total = total * scale + weights.sum(1, keepdim=True)
        mean = mean * scale + weights @ block
        best = new_best
    score = (mean / total - z) / s2
    return score.to(x0.dtype).reshape(x0.shape)
