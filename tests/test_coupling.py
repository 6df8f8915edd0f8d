"""Minibatch optimal-transport couplings."""

import pytest
import torch

from fluxmatch.coupling import coupling_cost, ot_coupling


def test_exact_coupling_is_a_cost_lowering_permutation():
    gen = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(64, 2, generator=gen), 3 + torch.randn(64, 2, generator=gen)
    paired, same = ot_coupling(x0, x1, "exact")
    assert same is x1
    rows = [tuple(r.tolist()) for r in paired]
    assert sorted(rows) == sorted(tuple(r.tolist()) for r in x0)  # every noise point used once
    assert coupling_cost(paired, x1) < coupling_cost(x0, x1)


def test_sinkhorn_lowers_cost_on_average():
    gen = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(256, 2, generator=gen), torch.randn(256, 2, generator=gen) * 2
    paired, _ = ot_coupling(x0, x1, "sinkhorn", generator=gen)
    assert coupling_cost(paired, x1) < 0.7 * coupling_cost(x0, x1)


def test_bad_inputs():
    from fluxmatch.errors import FluxMatchError

    with pytest.raises(FluxMatchError, match="shape"):
        ot_coupling(torch.randn(4, 2), torch.randn(5, 2))
    with pytest.raises(FluxMatchError, match="OT method"):
        ot_coupling(torch.randn(4, 2), torch.randn(4, 2), "nope")
