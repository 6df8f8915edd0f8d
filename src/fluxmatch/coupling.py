"""Couplings of noise and data minibatches for Flow Matching.

Independent pairing, or minibatch optimal transport (Pooladian et al. 2023; Tong et al. 2023):
pair noise and data points by the OT plan of the squared Euclidean cost, which straightens
the learned paths. Exact OT through POT's network simplex for small batches, entropic
(Sinkhorn) beyond.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import FluxMatchError

COUPLINGS = ("independent", "ot", "exact", "sinkhorn")
_EXACT_MAX = 1024


def independent_coupling(x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pairing as drawn."""
    return x0, x1


def coupling_cost(x0: torch.Tensor, x1: torch.Tensor) -> float:
    """Mean squared distance of the pairs (x0_i, x1_i)."""
    return float((x0 - x1).reshape(x0.shape[0], -1).square().sum(1).mean())


def ot_coupling(
    x0: torch.Tensor, x1: torch.Tensor, method: str = "auto", reg: float = 0.05, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x0 reordered so that (x0_i, x1_i) follow the minibatch OT plan; x1 unchanged.

    Args:
        x0, x1: (B, ...) noise and data batches of equal size.
        method: "exact" (a permutation), "sinkhorn" (one partner per data point drawn from the
            entropic plan, with replacement) or "auto" (exact for B ≤ 1024).
        reg: entropic regularisation relative to the mean cost (Sinkhorn only).
    """
    import ot

    if x0.shape != x1.shape:
        raise FluxMatchError(f"noise and data batches must have the same shape, got {tuple(x0.shape)} and {tuple(x1.shape)}")
    b = x0.shape[0]
    if method == "auto":
        method = "exact" if b <= _EXACT_MAX else "sinkhorn"
    cost = torch.cdist(x1.reshape(b, -1).double(), x0.reshape(b, -1).double()).square().numpy()
    weights = np.full(b, 1.0 / b)
    if method == "exact":
        plan = ot.emd(weights, weights, cost)
        partner = torch.from_numpy(plan.argmax(1))
    elif method == "sinkhorn":
        plan = ot.sinkhorn(weights, weights, cost / cost.mean(), reg)
        rows = torch.from_numpy(plan / plan.sum(1, keepdims=True)).clamp_min(0)
        partner = torch.multinomial(rows, 1, generator=generator)[:, 0]
    else:
        raise FluxMatchError(f"unknown OT method {method!r}: expected 'auto', 'exact' or 'sinkhorn'")
    return x0[partner.to(x0.device)], x1
