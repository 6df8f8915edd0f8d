"""Probability paths: boundary values and closed-form derivatives."""

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.paths import OTPath, VEPath, VPPath, make_path


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
    ve = VEPath(0.01, 5.0)
    assert abs(float(ve.sigma(t0)) - 5.0) < 1e-9 and abs(float(ve.sigma(t1)) - 0.01) < 1e-12


def test_sample_is_the_interpolant():
    x0, x1, t = torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2), torch.rand(6)
    s = OTPath(0.0).sample(x0, x1, t)
    assert torch.allclose(s.xt, t[:, None, None, None] * x1 + (1 - t[:, None, None, None]) * x0)
    assert torch.allclose(s.velocity, x1 - x0)


def test_unknown_path():
    with pytest.raises(FluxMatchError, match="path"):
        make_path("nope")
