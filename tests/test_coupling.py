"""Minibatch optimal-transport couplings."""

import pytest
import torch

from fluxmatch.coupling import coupling_cost, independent_coupling, ot_coupling
from fluxmatch.errors import FluxMatchError


def _partner_indices(paired, x0):
    """Which row of x0 each paired row is (rows of continuous random data are distinct)."""
    return torch.cdist(paired, x0).argmin(1)


def test_independent_coupling_is_the_identity():
    x0, x1 = torch.randn(5, 2), torch.randn(5, 2)
    a, b = independent_coupling(x0, x1)
    assert a is x0 and b is x1


def test_exact_coupling_is_a_cost_lowering_permutation():
    gen = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(64, 2, generator=gen), 3 + torch.randn(64, 2, generator=gen)
    paired, same = ot_coupling(x0, x1, "exact")
    assert same is x1
    idx = _partner_indices(paired, x0)
    assert torch.equal(paired, x0[idx]) and torch.equal(idx.sort().values, torch.arange(64))  # each index once
    assert coupling_cost(paired, x1) < coupling_cost(x0, x1)
    # the exact plan is optimal: no swap of two partners lowers the cost
    pair = (paired - x1).square().sum(1)
    swapped = (paired[None, :] - x1[:, None]).square().sum(2)  # (i, j): x0 partner of j given to i
    assert ((swapped + swapped.T) - (pair[:, None] + pair[None, :]) > -1e-4).all()


def test_auto_is_exact_for_small_batches_and_keeps_event_shape():
    gen = torch.Generator().manual_seed(2)
    x0, x1 = torch.randn(32, 1, 2, 2, generator=gen), torch.randn(32, 1, 2, 2, generator=gen)
    auto, _ = ot_coupling(x0, x1)
    exact, _ = ot_coupling(x0, x1, "exact")
    assert auto.shape == x0.shape and torch.equal(auto, exact)


def test_sinkhorn_lowers_cost_on_average():
    gen = torch.Generator().manual_seed(1)
    ratios = []
    for _ in range(5):
        x0, x1 = torch.randn(256, 2, generator=gen), torch.randn(256, 2, generator=gen) * 2
        paired, same = ot_coupling(x0, x1, "sinkhorn", generator=gen)
        assert same is x1
        assert torch.equal(paired, x0[_partner_indices(paired, x0)])  # partners are noise points
        ratios.append(coupling_cost(paired, x1) / coupling_cost(x0, x1))
    assert sum(ratios) / len(ratios) < 0.7, ratios


def test_sinkhorn_survives_outliers():
    gen = torch.Generator().manual_seed(3)
    x0, x1 = torch.randn(64, 2, generator=gen), torch.randn(64, 2, generator=gen)
    x1[0] = 1e3  # exp(−C/reg) underflows for this row in the plain solver
    paired, _ = ot_coupling(x0, x1, "sinkhorn", generator=gen)
    assert torch.isfinite(paired).all() and coupling_cost(paired, x1) <= coupling_cost(x0, x1) * 1.01


def test_bad_inputs():
    with pytest.raises(FluxMatchError, match="shape"):
        ot_coupling(torch.randn(4, 2), torch.randn(5, 2))
    with pytest.raises(FluxMatchError, match="OT method"):
        ot_coupling(torch.randn(4, 2), torch.randn(4, 2), "nope")
    with pytest.raises(FluxMatchError, match="regularisation"):
        ot_coupling(torch.randn(4, 2), torch.randn(4, 2), "sinkhorn", reg=0.0)
