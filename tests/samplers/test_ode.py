"""Flow-ODE solvers: convergence order, NFE counts, direction, recording and bad input."""

import math

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import MLPField
from fluxmatch.samplers import ODEResult, solve_ode

# dx/dt = cos(t) A x (rotation plus decay, time-dependent speed): x(t) = exp(sin(t) A) x(0).
A = torch.tensor([[-0.5, 1.0], [-1.0, -0.5]], dtype=torch.float64)


def velocity(x, t):
    return torch.cos(t)[:, None] * (x @ A.T)


def exact(x0, t0, t1):
    return x0 @ torch.linalg.matrix_exp((math.sin(t1) - math.sin(t0)) * A).T


X0 = torch.tensor([[1.0, 0.0], [0.3, -2.0], [-1.0, 0.5]], dtype=torch.float64)


@pytest.mark.parametrize("method,order", [("euler", 1), ("midpoint", 2), ("heun", 2)])
def test_fixed_step_methods_reach_their_order(method, order):
    errors = [(solve_ode(velocity, X0, method=method, steps=n).x - exact(X0, 0.0, 1.0)).norm() for n in (20, 40, 80)]
    for coarse, fine in zip(errors[:-1], errors[1:]):
        assert abs(math.log2(coarse / fine) - order) < 0.3


def test_dopri5_is_accurate_and_counts_evaluations():
    calls = 0

    def counted(x, t):
        nonlocal calls
        calls += 1
        return velocity(x, t)

    result = solve_ode(counted, X0, method="dopri5", rtol=1e-7, atol=1e-7)
    assert isinstance(result, ODEResult)
    assert (result.x - exact(X0, 0.0, 1.0)).abs().max() < 1e-5
    assert result.nfe == calls > 0


@pytest.mark.parametrize("method,stages", [("euler", 1), ("midpoint", 2), ("heun", 2)])
def test_fixed_step_nfe_is_exact(method, stages):
    calls = 0

    def counted(x, t):
        nonlocal calls
        calls += 1
        assert t.shape == (x.shape[0],)
        return velocity(x, t)

    assert solve_ode(counted, X0, method=method, steps=7).nfe == calls == 7 * stages


@pytest.mark.parametrize("method", ["heun", "dopri5"])
def test_backwards_integration_inverts_forwards(method):
    kwargs = dict(method=method, steps=400, rtol=1e-7, atol=1e-7)  # steps for Heun, tolerances for dopri5
    x1 = solve_ode(velocity, X0, 0.0, 1.0, **kwargs).x
    back = solve_ode(velocity, x1, 1.0, 0.0, **kwargs)
    assert (back.x - X0).abs().max() < 1e-5
    # Backwards on its own matches the exact flow as well.
    assert (solve_ode(velocity, X0, 1.0, 0.2, **kwargs).x - exact(X0, 1.0, 0.2)).abs().max() < 1e-5


@pytest.mark.parametrize("method", ["midpoint", "dopri5"])
def test_recording(method):
    result = solve_ode(velocity, X0, 1.0, 0.0, method=method, steps=5, record=True)
    assert result.trajectory.shape == (6, 3, 2)
    assert torch.allclose(result.times, torch.linspace(1.0, 0.0, 6, dtype=torch.float64))
    assert torch.equal(result.trajectory[0], X0) and torch.equal(result.trajectory[-1], result.x)
    assert solve_ode(velocity, X0, method=method, steps=5).trajectory is None


def test_a_time_conditioned_field_works_directly():
    torch.manual_seed(0)
    field = MLPField(2, (16,), conditioning="time")
    x = torch.randn(4, 2)
    euler = solve_ode(field, x, method="euler", steps=3)
    with torch.no_grad():
        manual = x
        for k in range(3):
            manual = manual + field(manual, torch.full((4,), k / 3)) / 3
    assert torch.allclose(euler.x, manual, atol=1e-6)
    assert not euler.x.requires_grad
    assert torch.isfinite(solve_ode(field, x, method="dopri5").x).all()


def test_bad_inputs_raise():
    with pytest.raises(FluxMatchError, match="steps"):
        solve_ode(velocity, X0, steps=0)
    with pytest.raises(FluxMatchError, match="unknown ODE method"):
        solve_ode(velocity, X0, method="rk4")
    with pytest.raises(FluxMatchError, match="NaN"):
        solve_ode(velocity, torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(FluxMatchError, match="shape"):
        solve_ode(lambda x, t: x[:, :1], X0)
    blowup = lambda x, t: x**2  # noqa: E731  x(t) = 1 / (1/x0 − t) explodes
    with pytest.raises(FluxMatchError, match="non-finite"):
        solve_ode(blowup, torch.full((2, 1), 10.0), 0.0, 10.0, method="euler", steps=50)
    with pytest.raises(FluxMatchError, match="non-finite"):
        solve_ode(blowup, torch.ones(2, 1), 0.0, 2.0, method="dopri5")
