"""Mixing curves and autocorrelation times against processes with known answers."""

import json
import math

import numpy as np
import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.metrics import MixingCurve, autocorrelation_time, integrated_autocorrelation_time, mixing_curve, steps_to_reach


def test_ar1_autocorrelation_time():
    """AR(1) with ρ = 0.9 has τ = (1 + ρ)/(1 − ρ) = 19; white noise has τ = 1."""
    rng = np.random.default_rng(0)
    rho, t, chains = 0.9, 20000, 8
    x = np.zeros((t, chains))
    x[0] = rng.standard_normal(chains)  # stationary start
    noise = rng.standard_normal((t, chains)) * math.sqrt(1 - rho**2)
    for k in range(1, t):
        x[k] = rho * x[k - 1] + noise[k]
    # Sokal's standard error of τ: τ·sqrt((4M + 2)/N) with M ≈ 5τ = 95, N = 160000 → ≈ 0.93; allow 3 of them
    assert abs(integrated_autocorrelation_time(x) - 19.0) < 2.8
    # one chain gives the same answer (T = 20000: standard error ≈ 2.6)
    assert abs(integrated_autocorrelation_time(x[:, 0]) - 19.0) < 8.0
    # white noise: M ≈ 5, N = 5000 → standard error ≈ 0.07; allow 3
    assert abs(integrated_autocorrelation_time(rng.standard_normal(5000)) - 1.0) < 0.2


def test_langevin_autocorrelation_of_a_gaussian():
    """Exact-score Langevin on N(0, 1) with step ε: x_{k+1} = (1 − ε)x_k + √(2ε)ξ, AR(1) with ρ = 1 − ε."""
    eps = 0.1
    generator = torch.Generator().manual_seed(1)
    tau = autocorrelation_time(lambda x, c: -x, torch.randn(64, 1, generator=generator), eps, 3000, burn_in=50, generator=generator)
    expected = (2 - eps) / eps  # (1 + ρ)/(1 − ρ) = 19; standard error ≈ 19·sqrt(382/192000) ≈ 0.85 (0.88 measured); allow 3.5
    assert abs(tau - expected) < 3.0
    # a custom statistic: |x|² of the same chain has ρ² per step, τ = (1 + ρ²)/(1 − ρ²) ≈ 9.5
    tau2 = autocorrelation_time(lambda x, c: -x, torch.randn(64, 1, generator=generator), eps, 3000, statistic=lambda x: x[:, 0] ** 2, generator=generator)
    # Sokal's standard error ≈ 9.5·sqrt(192/192000) ≈ 0.3 (0.37 measured over 10 seeds); allow about 3
    assert abs(tau2 - (1 + 0.81) / (1 - 0.81)) < 1.2


def test_mixing_curve_decreases_from_a_far_start_in_one_pass():
    generator = torch.Generator().manual_seed(2)
    reference = torch.randn(500, 2, generator=generator)
    start = torch.randn(500, 2, generator=generator) + torch.tensor([6.0, 0.0])
    calls = []

    def score(x, c):
        calls.append(1)
        return -x

    curve = mixing_curve(score, start, 0.05, [160, 0, 10, 40], reference, metric="w2", generator=generator)
    assert isinstance(curve, MixingCurve) and curve.steps == [0, 10, 40, 160] and curve.nfe == [0, 10, 40, 160]
    assert len(calls) == 160  # one chain, never rerun from the start
    assert json.loads(json.dumps(curve.as_dict()))["distances"] == curve.distances
    # the mean decays as 6(1 − ε)^k: 6, 3.6, 0.77, 0.0017, plus the two-sample floor (≈ 0.1 for 500 points)
    d = curve.distances
    assert d[0] > 5.5 and 3.0 < d[1] < 4.0 and 0.5 < d[2] < 1.0 and d[3] < 0.3
    assert steps_to_reach(curve, 1.0) == 40 and steps_to_reach(curve, 0.0) is None and steps_to_reach(curve, 10.0) == 0
    # linear interpolation between (10, d1) and (40, d2)
    crossing = steps_to_reach(curve, 2.0, interpolate=True)
    assert math.isclose(crossing, 10 + (d[1] - 2.0) / (d[1] - d[2]) * 30)


@pytest.mark.parametrize("metric", ["sliced_w2", "mmd"])
def test_other_metrics_also_decrease(metric):
    generator = torch.Generator().manual_seed(3)
    reference = torch.randn(400, 2, generator=generator)
    start = torch.randn(400, 2, generator=generator) + 4.0
    curve = mixing_curve(lambda x, c: -x, start, 0.05, [0, 20, 200], reference, metric=metric, generator=generator)
    assert curve.metric == metric and curve.distances[0] > curve.distances[1] > curve.distances[2]


def test_bad_input():
    with pytest.raises(FluxMatchError, match="constant"):
        integrated_autocorrelation_time(np.ones(10))
    with pytest.raises(FluxMatchError, match="metric"):
        mixing_curve(lambda x, c: -x, torch.zeros(3, 2), 0.1, [1], torch.zeros(3, 2), metric="bogus")
    with pytest.raises(FluxMatchError, match="steps"):
        mixing_curve(lambda x, c: -x, torch.zeros(3, 2), 0.1, [], torch.zeros(3, 2))
    with pytest.raises(FluxMatchError, match="diverged"):
        mixing_curve(lambda x, c: 1e30 * x, torch.ones(3, 2), 1.0, [50], torch.zeros(3, 2))
    with pytest.raises(FluxMatchError, match="one value per chain"):
        autocorrelation_time(lambda x, c: -x, torch.zeros(4, 2), 0.1, 10, statistic=lambda x: x)
