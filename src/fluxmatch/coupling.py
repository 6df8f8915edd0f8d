"""Couplings of noise and data minibatches for Flow Matching.

Independent pairing, or minibatch optimal transport (Pooladian et al. 2023; Tong et al. 2023):
pair noise and data points by the OT plan of the squared Euclidean cost, which straightens
the learned paths. Exact OT through POT's network simplex for small batches, entropic
(Sinkhorn) beyond.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .errors import FluxMatchError, check_positive

COUPLINGS = ("independent", "ot", "exact", "sinkhorn")
_OT_METHODS = ("auto", "exact", "sinkhorn")
_EXACT_MAX = 1024  # network simplex is O(B³); beyond this Sinkhorn is far faster


def independent_coupling(x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pairing as drawn: (x0, x1) unchanged, i.e. the product coupling q(x0) p(x1)."""
    return x0, x1


def coupling_cost(x0: torch.Tensor, x1: torch.Tensor) -> float:
    """Mean squared distance of the pairs, ``(1/B) Σ_i |x0_i − x1_i|²`` (units of x²)."""
    return float((x0 - x1).reshape(x0.shape[0], -1).square().sum(1).mean())


def ot_coupling(
    x0: torch.Tensor, x1: torch.Tensor, method: str = "auto", reg: float = 0.05, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x0 reordered so that (x0_i, x1_i) follow the minibatch OT plan; x1 unchanged.

    The plan π minimises ``Σ_ij π_ij |x1_i − x0_j|²`` over couplings of the two uniform
    empirical measures (rows flattened). Exact OT of equal-size uniform measures has a
    permutation among its optimal vertices, which the network simplex returns; Sinkhorn solves
    the entropic problem with regularisation ``reg · mean(C)`` so that ``reg`` is scale-free.

    Args:
        x0, x1: (B, ...) noise and data batches of equal shape.
        method: "exact" (a permutation, O(B³)), "sinkhorn" (one partner per data point drawn
            from its row of the entropic plan, with replacement) or "auto" (exact for
            B ≤ 1024, Sinkhorn beyond).
        reg: entropic regularisation relative to the mean cost (Sinkhorn only).
        generator: random generator for Sinkhorn's partner draws.

    Returns:
        (x0[partner], x1), both (B, ...); x1 is the object given.
    """
    import ot

    if x0.shape != x1.shape:
        raise FluxMatchError(f"noise and data batches must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    if method not in _OT_METHODS:
        raise FluxMatchError(f"unknown OT method {method!r}: expected one of {', '.join(_OT_METHODS)}")
    reg = check_positive(reg, "the Sinkhorn regularisation")
    b = x0.shape[0]
    if method == "auto":
        method = "exact" if b <= _EXACT_MAX else "sinkhorn"
    # POT works on CPU float64 arrays; the plan only chooses indices, so no gradient is lost.
    a, c = x1.detach().reshape(b, -1).double().cpu(), x0.detach().reshape(b, -1).double().cpu()
    cost = torch.cdist(a, c).square().numpy()
    weights = np.full(b, 1.0 / b)
    if method == "exact":
        plan = ot.emd(weights, weights, cost)
        partner = torch.from_numpy(plan.argmax(1))
    else:
        scale = max(float(cost.mean()), np.finfo(np.float64).tiny)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # underflow is detected below and handled
            plan = ot.sinkhorn(weights, weights, cost / scale, reg)
        if not (np.isfinite(plan).all() and (plan.sum(1) > 0).all()):
            # exp(−C/reg) underflowed for far-outlying points: the log-domain solver (3–5× slower) copes.
            plan = ot.sinkhorn(weights, weights, cost / scale, reg, method="sinkhorn_log")
        rows = torch.from_numpy(np.clip(np.nan_to_num(plan), 0.0, None))
        rows = torch.where(rows.sum(1, keepdim=True) > 0, rows, torch.ones_like(rows))  # a dead row pairs uniformly
        partner = torch.multinomial(rows, 1, replacement=True, generator=generator)[:, 0]
    return x0[partner.to(x0.device)], x1
