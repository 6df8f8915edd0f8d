"""Noise schedules: end points, spacing laws, the final 0, and schedule validation."""

import math

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.samplers import check_sigmas, edm_sigmas, geometric_sigmas


def test_edm_schedule_is_evenly_spaced_in_the_rho_th_root():
    sigmas = edm_sigmas(18, sigma_min=0.002, sigma_max=80.0, rho=7.0)
    assert sigmas.shape == (19,) and sigmas.dtype == torch.float64
    assert sigmas[0] == pytest.approx(80.0, rel=1e-12) and sigmas[17] == pytest.approx(0.002, rel=1e-12)
    assert sigmas[-1] == 0
    roots = sigmas[:-1] ** (1 / 7)
    gaps = roots[:-1] - roots[1:]
    assert torch.allclose(gaps, gaps.mean().expand(17), rtol=1e-10)
    # Karras et al.'s formula at one interior index, written out.
    i, n = 5, 18
    expected = (80 ** (1 / 7) + i / (n - 1) * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert float(sigmas[i]) == pytest.approx(expected, rel=1e-12)


def test_geometric_schedule_has_a_constant_ratio():
    sigmas = geometric_sigmas(11, sigma_min=0.01, sigma_max=10.0)
    assert sigmas.shape == (12,) and sigmas[-1] == 0
    assert sigmas[0] == 10.0 and sigmas[-2] == 0.01
    ratios = sigmas[1:-1] / sigmas[:-2]
    assert torch.allclose(ratios, torch.full_like(ratios, 10 ** (-3 / 10)), rtol=1e-12)
    # Large ρ tends to the geometric schedule (log σ^{1/ρ} is linear in the limit).
    assert torch.allclose(edm_sigmas(11, 0.01, 10.0, rho=1e5)[:-1], sigmas[:-1], rtol=1e-3)


@pytest.mark.parametrize("schedule", [edm_sigmas, geometric_sigmas])
def test_one_level_is_sigma_max_then_zero(schedule):
    assert torch.equal(schedule(1, 0.5, 3.0), torch.tensor([3.0, 0.0], dtype=torch.float64))
    assert torch.equal(check_sigmas(schedule(7)), schedule(7))


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(n=2.5), dict(n=True), dict(n=5, sigma_min=0.0), dict(n=5, sigma_min=2.0, sigma_max=1.0), dict(n=5, sigma_max=math.inf)])
def test_bad_schedule_arguments_raise(kwargs):
    with pytest.raises(FluxMatchError):
        edm_sigmas(**kwargs)
    with pytest.raises(FluxMatchError):
        geometric_sigmas(**kwargs)


def test_bad_rho_raises():
    with pytest.raises(FluxMatchError, match="rho"):
        edm_sigmas(5, rho=0.0)


def test_check_sigmas_accepts_lists_and_a_final_zero_only():
    assert torch.equal(check_sigmas([2.0, 1.0, 0.0]), torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64))
    assert torch.equal(check_sigmas(torch.tensor([2.0, 1.0])), torch.tensor([2.0, 1.0], dtype=torch.float64))
    with pytest.raises(FluxMatchError, match="strictly decreasing"):
        check_sigmas([0.1, 1.0, 10.0])
    with pytest.raises(FluxMatchError, match="strictly decreasing"):
        check_sigmas([1.0, 1.0, 0.0])
    with pytest.raises(FluxMatchError, match="final 0"):
        check_sigmas([1.0, 0.0, -1.0])
    with pytest.raises(FluxMatchError, match="at least 2"):
        check_sigmas([1.0])
    with pytest.raises(FluxMatchError, match="1-D"):
        check_sigmas(torch.ones(2, 2))
    with pytest.raises(FluxMatchError, match="NaN"):
        check_sigmas([1.0, float("nan"), 0.0])
    with pytest.raises(FluxMatchError, match="sequence"):
        check_sigmas("1, 0")
