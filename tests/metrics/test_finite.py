"""Every public metric function refuses NaN and inf in what the user gives it, naming the
argument: a non-finite row must never turn into a (perfect-looking) score.

The table below has one entry per public function of ``fluxmatch.metrics``; a test checks that
the table and ``fluxmatch.metrics.__all__`` list the same functions, so a new metric cannot be
left out without failing."""

import inspect
import math
import re

import numpy as np
import pytest
import torch

import fluxmatch as fm
import fluxmatch.metrics as metrics
from fluxmatch.errors import FluxMatchError
from fluxmatch.metrics.images import DigitsClassifier
from fluxmatch.reference import GaussianMixture

NO_USER_VALUES = {"digits_classifier"}  # takes no arguments: nothing to check
GAUSSIAN = GaussianMixture(torch.tensor([[0.5, -0.5]]), 0.5)


def points(n=40, d=2, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def spoilt(x, value, index=(3, 1)):
    """A copy of x with one entry set to ``value`` (so exactly one row is non-finite)."""
    x = x.clone() if isinstance(x, torch.Tensor) else np.array(x, dtype=np.float64)
    x[index] = value
    return x


def digits(n=6):
    return torch.full((n, 1, 8, 8), -0.5)


def linear(x, c):
    return -x


def nan_field(x, c):
    return torch.full_like(x, float("nan"))


def curve(v):
    return metrics.MixingCurve([0, 5], [1.0, v], [0, 5], "w2")


P, Q = points(), points(seed=1)
ROW = r"has 1 non-finite row\(s\) of 40 \(NaN or inf\): metrics need finite samples"

# name -> [(argument, regex the message must match, call with one bad value v)]
CASES = {
    "wasserstein2": [("x", ROW, lambda v: metrics.wasserstein2(spoilt(P, v), Q)), ("y", ROW, lambda v: metrics.wasserstein2(P, spoilt(Q, v)))],
    "sliced_wasserstein2": [("x", ROW, lambda v: metrics.sliced_wasserstein2(spoilt(P, v), Q)), ("y", ROW, lambda v: metrics.sliced_wasserstein2(P, spoilt(Q, v)))],
    "mmd_rbf": [("x", ROW, lambda v: metrics.mmd_rbf(spoilt(P, v), Q)), ("y", ROW, lambda v: metrics.mmd_rbf(P, spoilt(Q, v)))],
    "energy_distance": [("x", ROW, lambda v: metrics.energy_distance(spoilt(P, v), Q)), ("y", ROW, lambda v: metrics.energy_distance(P, spoilt(Q, v)))],
    "sample_metrics": [
        ("samples", ROW + r" \(the sampler diverged", lambda v: metrics.sample_metrics(spoilt(P, v), Q)),
        ("data", ROW, lambda v: metrics.sample_metrics(P, spoilt(Q, v))),
        ("reference", ROW, lambda v: metrics.sample_metrics(P, Q, reference=spoilt(points(seed=2), v))),
    ],
    "jacobian": [("x", ROW, lambda v: metrics.jacobian(linear, spoilt(P, v)))],
    "divergence_field": [("x", ROW, lambda v: metrics.divergence_field(linear, spoilt(P, v)))],
    "curl_2d": [("x", ROW, lambda v: metrics.curl_2d(linear, spoilt(P, v)))],
    "mean_abs_curl": [("points", ROW, lambda v: metrics.mean_abs_curl(linear, spoilt(P, v)))],
    "grid_points": [("lim", "lim must be", lambda v: metrics.grid_points(v, 4)), ("lim", "lim must be", lambda v: metrics.grid_points((0, v, 0, 1), 4))],
    "field_on_grid": [("lim", "lim must be", lambda v: metrics.field_on_grid(linear, v, 4))],
    "frechet_distance": [("feats_a", ROW, lambda v: metrics.frechet_distance(spoilt(P, v), Q)), ("feats_b", ROW, lambda v: metrics.frechet_distance(P, spoilt(Q, v)))],
    "gaussian_frechet_distance": [
        ("mean_a", r"has 1 non-finite entry\(s\) of 2", lambda v: metrics.gaussian_frechet_distance([0.0, v], np.eye(2), [0.0, 0.0], np.eye(2))),
        ("cov_a", r"has 1 non-finite row\(s\) of 2", lambda v: metrics.gaussian_frechet_distance([0.0, 0.0], spoilt(np.eye(2), v, (1, 0)), [0.0, 0.0], np.eye(2))),
        ("mean_b", r"has 1 non-finite entry\(s\) of 2", lambda v: metrics.gaussian_frechet_distance([0.0, 0.0], np.eye(2), [v, 0.0], np.eye(2))),
        ("cov_b", r"has 1 non-finite row\(s\) of 2", lambda v: metrics.gaussian_frechet_distance([0.0, 0.0], np.eye(2), [0.0, 0.0], spoilt(np.eye(2), v, (0, 1)))),
    ],
    "digit_features": [("images", r"has 1 non-finite image\(s\) of 6", lambda v: metrics.digit_features(spoilt(digits(), v, (2, 0, 3, 3)), DigitsClassifier()))],
    "fd_digits": [
        ("samples", r"has 1 non-finite image\(s\) of 6", lambda v: metrics.fd_digits(spoilt(digits(), v, (2, 0, 3, 3)), digits(), DigitsClassifier())),
        ("reference", r"has 1 non-finite image\(s\) of 6", lambda v: metrics.fd_digits(digits(), spoilt(digits(), v, (0, 0, 0, 0)), DigitsClassifier())),
    ],
    "class_coverage": [("samples", r"has 1 non-finite image\(s\) of 6", lambda v: metrics.class_coverage(spoilt(digits(), v, (5, 0, 7, 7)), model=DigitsClassifier()))],
    "image_metrics": [
        ("samples", r"has 1 non-finite image\(s\) of 6", lambda v: metrics.image_metrics(spoilt(digits(), v, (1, 0, 1, 1)), digits())),
        ("holdout", r"has 1 non-finite image\(s\) of 6", lambda v: metrics.image_metrics(digits(), spoilt(digits(), v, (1, 0, 1, 1)))),
        ("floor_data", r"has 1 non-finite image\(s\) of 6", lambda v: metrics.image_metrics(digits(), digits(), floor_data=spoilt(digits(), v, (1, 0, 1, 1)))),
    ],
    "antisymmetric_jacobian_norm": [("points", ROW, lambda v: metrics.antisymmetric_jacobian_norm(linear, spoilt(P, v)))],
    "residual_stats": [("points", ROW, lambda v: metrics.residual_stats(linear, GAUSSIAN, spoilt(P, v)))],
    "score_flux_split": [("field(x)", r"has 8 non-finite row\(s\) of 8", lambda v: metrics.score_flux_split(lambda x, c: torch.full_like(x, v), GAUSSIAN, n=8, steps=1))],
    "mixing_curve": [
        ("x0", ROW, lambda v: metrics.mixing_curve(linear, spoilt(P, v), 0.1, [0, 2], Q)),
        ("reference", ROW, lambda v: metrics.mixing_curve(linear, P, 0.1, [0, 2], spoilt(Q, v))),
    ],
    "steps_to_reach": [
        ("target", r"has 1 non-finite value\(s\) of 1", lambda v: metrics.steps_to_reach(curve(0.5), v)),
        ("curve.distances", r"has 1 non-finite entry\(s\) of 2", lambda v: metrics.steps_to_reach(curve(v), 0.7)),
    ],
    "integrated_autocorrelation_time": [("series", r"has 1 non-finite step\(s\) of 40", lambda v: metrics.integrated_autocorrelation_time(spoilt(P, v)))],
    "autocorrelation_time": [("x0", ROW, lambda v: metrics.autocorrelation_time(linear, spoilt(P, v), 0.1, 8))],
}
BAD = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf")}


def test_the_table_covers_every_public_metric_function():
    public = {name for name in metrics.__all__ if inspect.isfunction(getattr(metrics, name))}
    assert len(public) >= 25
    assert set(CASES) | NO_USER_VALUES == public
    assert all(inspect.signature(getattr(metrics, name)).parameters == {} for name in NO_USER_VALUES)


@pytest.mark.parametrize("bad", BAD.values(), ids=BAD.keys())
@pytest.mark.parametrize(("argument", "pattern", "call"), [pytest.param(*case, id=f"{name}-{case[0]}-{i}") for name, cases in CASES.items() for i, case in enumerate(cases)])
def test_non_finite_input_is_refused_naming_the_argument(argument, pattern, call, bad):
    pattern = pattern if pattern.startswith("lim") else re.escape(argument) + " " + pattern
    with pytest.raises(FluxMatchError, match=pattern):
        call(bad)


def test_one_nan_row_of_two_thousand_is_not_a_perfect_w2():
    x = points(2000)
    y = x.clone()
    x[1234, 0] = float("nan")
    with pytest.raises(FluxMatchError, match=r"^x has 1 non-finite row\(s\) of 2000 \(NaN or inf\): metrics need finite samples$"):
        fm.wasserstein2(x, y)
    with pytest.raises(FluxMatchError, match=r"^y has 1 non-finite row\(s\) of 2000"):
        fm.energy_distance(y.numpy(), x.numpy())


def test_finite_input_still_gives_a_number():
    assert math.isfinite(metrics.wasserstein2(P, Q)) and math.isfinite(metrics.mmd_rbf(P.numpy(), Q.tolist()))
