"""Probability paths: boundary values, closed-form derivatives, the interpolant and bad input."""

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.paths import PATHS, OTPath, VEPath, VPPath, make_path


@pytest.mark.parametrize("path", [OTPath(1e-3), VPPath(), VEPath()])
def test_derivatives_match_finite_differences(path):
    t = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    h = 1e-6
    for f, df in ((path.alpha, path.d_alpha), (path.sigma, path.d_sigma)):
        numeric = (f(t + h) - f(t - h)) / (2 * h)
        assert torch.allclose(df(t), numeric, rtol=1e-5, atol=1e-6)


def test_boundaries():
    t0, t1 = torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    ot = OTPath(1e-3)
    assert float(ot.alpha(t0)) == 0 and float(ot.sigma(t0)) == 1
    assert float(ot.alpha(t1)) == 1 and abs(float(ot.sigma(t1)) - 1e-3) < 1e-12
    vp = VPPath()
    assert float(vp.alpha(t1)) == 1 and float(vp.sigma(t1)) == 0 and float(vp.alpha(t0)) < 0.01  # exp(−½T(1)) = e^−5.025
    assert abs(float(vp.alpha(t0) ** 2 + vp.sigma(t0) ** 2) - 1) < 1e-12  # variance preserving
    ve = VEPath(0.01, 5.0)
    assert float(ve.alpha(t0)) == 1 and float(ve.alpha(t1)) == 1
    assert abs(float(ve.sigma(t0)) - 5.0) < 1e-9 and abs(float(ve.sigma(t1)) - 0.01) < 1e-12


def test_ot_sample_ends():
    gen = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)
    path = OTPath(1e-2)
    assert torch.equal(path.sample(x0, x1, torch.zeros(4)).xt, x0)
    assert torch.allclose(path.sample(x0, x1, torch.ones(4)).xt, x1 + 1e-2 * x0)


def test_sample_is_the_interpolant_for_any_event_shape():
    x0, x1, t = torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2), torch.rand(6)
    s = OTPath(0.0).sample(x0, x1, t)
    assert s.xt.shape == x1.shape and s.t is t and s.x0 is x0 and s.x1 is x1
    assert torch.allclose(s.xt, t[:, None, None, None] * x1 + (1 - t[:, None, None, None]) * x0)
    assert torch.allclose(s.velocity, x1 - x0)


@pytest.mark.parametrize("name", sorted(PATHS))
def test_config_rebuilds_the_path(name):
    path = make_path(name)
    config = dict(path.config)
    assert config.pop("name") == name
    again = make_path(name, **config)
    t = torch.linspace(0.1, 0.9, 5)
    assert torch.equal(again.sigma(t), path.sigma(t)) and make_path(path) is path


def test_bad_inputs():
    with pytest.raises(FluxMatchError, match="ot, vp, ve"):
        make_path("nope")
    with pytest.raises(FluxMatchError, match="bad arguments"):
        make_path("vp", sigma_min=0.1)
    for bad in (lambda: OTPath(1.0), lambda: OTPath(float("nan")), lambda: VPPath(1.0, 0.5), lambda: VEPath(1.0, 0.5), lambda: VEPath(-1.0)):
        with pytest.raises(FluxMatchError):
            bad()
    with pytest.raises(FluxMatchError, match="same shape"):
        OTPath().sample(torch.randn(3, 2), torch.randn(3, 3), torch.rand(3))
    with pytest.raises(FluxMatchError, match=r"shape \(B,\)"):
        OTPath().sample(torch.randn(3, 2), torch.randn(3, 2), torch.rand(3, 1))
