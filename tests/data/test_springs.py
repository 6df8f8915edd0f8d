"""Coupled springs: RK4 against the linear system's normal modes, energy, sampling moments, the
dynamics residual, the .npz round trip and bad input."""

import math

import numpy as np
import pytest
import torch

from fluxmatch.data.files import load_array
from fluxmatch.data.springs import (
    FEATURE_NAMES,
    SpringParams,
    dynamics_residual,
    load_springs_params,
    rk4_step,
    save_springs,
    simulate_springs,
    springs_derivative,
)
from fluxmatch.errors import FluxMatchError

# A moderate initial state (q1, v1, q2, v2) that excites both normal modes.
X0 = torch.tensor([1.5, 0.5, -1.0, 0.3], dtype=torch.float64)


def integrate(x0: torch.Tensor, params: SpringParams, steps: int) -> torch.Tensor:
    """(..., 4) → (..., steps + 1, 4): repeated float64 RK4 steps from x0."""
    states = [x0]
    for _ in range(steps):
        states.append(rk4_step(states[-1], params))
    return torch.stack(states, dim=-2)


def energy(x: torch.Tensor, p: SpringParams) -> torch.Tensor:
    q1, v1, q2, v2 = x.unbind(-1)
    return 0.5 * (v1**2 + v2**2) + 0.5 * p.k_wall * (q1**2 + q2**2) + 0.5 * p.k_couple * (q1 - q2) ** 2 + 0.25 * p.cubic * (q1**4 + q2**4)


def linear_solution(x0: torch.Tensor, p: SpringParams, t: torch.Tensor) -> tuple[torch.Tensor, list[float], list[float]]:
    """The exact linear (damping = cubic = 0) solution at times t, (len(t), 4), and each normal
    mode's frequency and amplitude (in (x, v/ω) phase space)."""
    q1, v1, q2, v2 = x0.tolist()
    omegas = [math.sqrt(p.k_wall), math.sqrt(p.k_wall + 2 * p.k_couple)]
    # In-phase s = (q1 + q2)/2 and anti-phase d = (q1 − q2)/2 are independent oscillators.
    modes = [((q1 + q2) / 2, (v1 + v2) / 2), ((q1 - q2) / 2, (v1 - v2) / 2)]
    pos, vel, amplitudes = [], [], []
    for omega, (a, b) in zip(omegas, modes):
        pos.append(a * torch.cos(omega * t) + b / omega * torch.sin(omega * t))
        vel.append(-a * omega * torch.sin(omega * t) + b * torch.cos(omega * t))
        amplitudes.append(math.hypot(a, b / omega))
    (s, d), (vs, vd) = pos, vel
    return torch.stack([s + d, vs + vd, s - d, vs - vd], dim=-1), omegas, amplitudes


def linear_error(dt: float, duration: float = 5.0) -> tuple[float, float]:
    """The largest |q_rk4 − q_exact| over a run of ``duration``, and its leading-order bound."""
    p = SpringParams(damping=0.0, cubic=0.0, dt=dt)
    steps = round(duration / dt)
    x = integrate(X0, p, steps)
    exact, omegas, amplitudes = linear_solution(X0, p, dt * torch.arange(steps + 1, dtype=torch.float64))
    error = (x - exact)[:, [0, 2]].abs().max().item()
    # RK4 on an oscillator multiplies (x + i v/ω) by R(iθ), θ = ω dt, and e^{iθ} − R(iθ) = −iθ⁵/120 + O(θ⁷):
    # after N steps each mode is off by ≈ N θ⁵/120 times its amplitude, i.e. T dt⁴ ω⁵/120 · A.
    bound = sum(steps * (w * dt) ** 5 / 120 * a for w, a in zip(omegas, amplitudes))
    return error, bound


def test_linear_normal_modes_match_rk4_to_fourth_order():
    error, bound = linear_error(0.1)
    assert 0.2 * bound < error < 1.1 * bound, (error, bound)
    half, half_bound = linear_error(0.05)
    assert half < 1.1 * half_bound
    assert 10 < error / half < 20, error / half  # global error O(dt⁴): 2⁴ = 16


def test_pure_modes_keep_their_shape_and_frequency():
    p = SpringParams(damping=0.0, cubic=0.0, dt=0.01)
    t = p.dt * torch.arange(201, dtype=torch.float64)
    for x0, omega in ((torch.tensor([1.0, 0.0, 1.0, 0.0]), math.sqrt(p.k_wall)), (torch.tensor([1.0, 0.0, -1.0, 0.0]), math.sqrt(p.k_wall + 2 * p.k_couple))):
        x = integrate(x0.double(), p, 200)
        sign = x0[2].item()
        assert torch.allclose(x[:, 2], sign * x[:, 0], atol=1e-12)
        assert torch.allclose(x[:, 0], torch.cos(omega * t), atol=1e-8)  # 200·(ω dt)⁵/120 < 2e-10


def test_simulate_follows_rk4_from_its_initial_states():
    p = SpringParams(damping=0.0, cubic=0.0)
    x = simulate_springs(64, seed=3, params=p)
    assert x.shape == (64, p.steps, 4) and x.dtype == torch.float32
    again = integrate(x[:, 0].double(), p, p.steps - 1)
    # float32 storage of the initial state is the only difference: relative 6e-8 of |x| ≲ 20.
    assert (x.double() - again).abs().max() < 1e-5


def test_derivative_is_the_stated_force_law():
    p = SpringParams(k_wall=1.3, k_couple=0.4, damping=0.2, cubic=0.1)
    d = springs_derivative(X0, p)
    q1, v1, q2, v2 = X0.tolist()
    a1 = -1.3 * q1 - 0.4 * (q1 - q2) - 0.2 * v1 - 0.1 * q1**3
    a2 = -1.3 * q2 - 0.4 * (q2 - q1) - 0.2 * v2 - 0.1 * q2**3
    assert torch.allclose(d, torch.tensor([v1, a1, v2, a2], dtype=torch.float64), atol=1e-14)


def energy_drift(dt: float, duration: float = 5.0) -> tuple[float, float]:
    """The largest relative energy change of the undamped cubic system, and a bound for it."""
    p = SpringParams(damping=0.0, cubic=0.08, dt=dt)
    steps = round(duration / dt)
    e = energy(integrate(X0, p, steps), p)
    # Stiffest linearised frequency along the orbit: k_w + 2k_c + 3κq² with q² ≤ 2E/k_w; each step's
    # relative error is at most ~θ⁵/120 of the state, so of the energy at most twice that.
    q2_max = 2 * e[0].item() / p.k_wall
    theta = math.sqrt(p.k_wall + 2 * p.k_couple + 3 * p.cubic * q2_max) * dt
    return ((e - e[0]).abs().max() / e[0]).item(), 2 * steps * theta**5 / 120


def test_energy_is_conserved_without_damping():
    drift, bound = energy_drift(0.1)
    assert drift < bound, (drift, bound)
    half, _ = energy_drift(0.05)
    assert drift / half > 16, drift / half  # at least fourth order


def test_energy_decreases_with_damping_by_the_dissipated_work():
    p = SpringParams()
    x = integrate(X0, p, 200)
    e = energy(x, p)
    assert (e.diff() < 0).all()
    # dE/dt = −damping Σv²: the total decrease is damping ∫Σv² dt, here by the trapezoid rule, whose
    # relative error is about dt²·(2ω)²/12 for Σv² oscillating at up to 2ω, ω² ≤ k_w + 2k_c + 3κq².
    v2 = x[:, 1] ** 2 + x[:, 3] ** 2
    work = p.damping * p.dt * (v2[1:] + v2[:-1]).sum() / 2
    omega2 = p.k_wall + 2 * p.k_couple + 3 * p.cubic * 2 * e[0].item() / p.k_wall
    assert abs((e[0] - e[-1]) / work - 1) < p.dt**2 * 4 * omega2 / 12


def test_damped_simulated_energy_never_rises():
    p = SpringParams()
    x = simulate_springs(500, seed=5, params=p).double()
    e = energy(x, p)
    # float32 storage: relative round-off ~1e-7 of E (up to ~10³ for the widest starts).
    assert (e.diff(dim=1) < 1e-6 * e[:, :-1]).all()
    assert (e[:, -1] < e[:, 0]).all()


def test_seeds_are_deterministic_and_distinct():
    a = simulate_springs(100, seed=7)
    assert torch.equal(a, simulate_springs(100, seed=7))
    assert not torch.equal(a, simulate_springs(100, seed=8))


def test_initial_state_moments():
    n, p = 4000, SpringParams()
    x0 = simulate_springs(n, seed=0, params=SpringParams(steps=2))[:, 0].double()
    for columns, std in (([0, 2], p.q_std), ([1, 3], p.v_std)):
        values = x0[:, columns].reshape(-1)
        m = values.numel()
        assert abs(values.mean().item()) < 4 * std / math.sqrt(m)
        # The sample variance of m normal values has standard error σ²·√(2/m).
        assert abs(values.var().item() - std**2) < 4 * std**2 * math.sqrt(2 / m)
    corr = torch.corrcoef(x0.T)
    assert (corr - torch.eye(4, dtype=torch.float64)).abs().max() < 4 / math.sqrt(n)


def test_relative_residual_takes_a_common_scale():
    x = simulate_springs(50, seed=4)
    noisy = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    own = dynamics_residual(noisy)
    shared = dynamics_residual(noisy, std=[2.0, 2.0, 2.0, 2.0])
    assert shared["rms"] == own["rms"]
    assert shared["relative_rms"] == pytest.approx(sum(own["per_feature"]) / 4 / 2.0, rel=1e-12)
    with pytest.raises(FluxMatchError, match="std must be 4"):
        dynamics_residual(x, std=[1.0, 2.0])


@pytest.fixture(scope="module")
def clean():
    return simulate_springs(500, seed=0)


def test_residual_of_simulated_data_is_round_off(clean):
    r = dynamics_residual(clean)
    assert r["relative_rms"] < 1e-5 and r["rms"] < 1e-5
    assert len(r["per_feature"]) == 4 and r["transitions"] == 500 * 49
    assert r["persistence_rms"] > 0.1 and r["persistence_relative_rms"] > 0.05
    assert dynamics_residual(clean.numpy())["rms"] == pytest.approx(r["rms"])


def test_residual_of_noisy_data_is_about_the_noise(clean):
    s = 0.01
    noise = s * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    r = dynamics_residual(clean.double() + noise)
    assert r["rms"] > 100 * dynamics_residual(clean)["rms"]
    # residual = e_{t+1} − J e_t with J = I + O(dt) the step's Jacobian: RMS ≈ s·√2 (to O(dt)).
    assert r["rms"] == pytest.approx(s * math.sqrt(2), rel=0.25)
    assert r["persistence_rms"] > r["rms"]


def test_residual_of_other_dynamics_is_large(clean):
    r = dynamics_residual(clean, SpringParams(k_couple=0.0))
    assert r["relative_rms"] > 1e-3


@pytest.mark.parametrize(
    "bad",
    [np.zeros((3, 5)), np.zeros((3, 5, 3)), np.zeros((3, 1, 4)), np.zeros((0, 5, 4)), np.full((2, 3, 4), np.nan), np.array([[["a"] * 4] * 3])],
    ids=["rank2", "features3", "T1", "N0", "nan", "strings"],
)
def test_residual_refuses_bad_trajectories(bad):
    with pytest.raises(FluxMatchError):
        dynamics_residual(bad)


@pytest.mark.parametrize(
    "kwargs",
    [{"dt": 0.0}, {"dt": -0.1}, {"steps": 1}, {"steps": 2.5}, {"steps": True}, {"q_std": 0.0}, {"v_std": -1.0}, {"k_wall": -1.0}, {"damping": math.nan}, {"cubic": math.inf}, {"k_couple": "0.7"}],
)
def test_bad_params_are_refused(kwargs):
    with pytest.raises(FluxMatchError):
        SpringParams(**kwargs)


def test_params_dict_round_trip():
    p = SpringParams(k_couple=0.5, steps=20)
    assert SpringParams.from_dict(p.as_dict()) == p
    assert SpringParams.from_dict({}) == SpringParams()
    with pytest.raises(FluxMatchError, match="unknown"):
        SpringParams.from_dict({"mass": 2.0})
    with pytest.raises(FluxMatchError):
        SpringParams.from_dict([("dt", 0.1)])


@pytest.mark.parametrize("n", [0, -3, 2.0, "5", True])
def test_bad_counts_are_refused(n):
    with pytest.raises(FluxMatchError):
        simulate_springs(n)


def test_bad_state_and_seed_are_refused():
    with pytest.raises(FluxMatchError):
        rk4_step(torch.zeros(3, 2))
    with pytest.raises(FluxMatchError):
        springs_derivative(np.zeros(4))
    with pytest.raises(FluxMatchError):
        simulate_springs(3, seed=1.5)
    with pytest.raises(FluxMatchError):
        simulate_springs(3, params={"dt": 0.1})


def test_save_and_load_round_trip(tmp_path):
    p = SpringParams(steps=12, damping=0.0)
    path = save_springs(tmp_path / "sub" / "springs.npz", 30, seed=4, params=p)
    with np.load(path, allow_pickle=False) as archive:
        assert np.array_equal(archive["x"], simulate_springs(30, seed=4, params=p).numpy())
        assert archive["x"].dtype == np.float32 and archive["x"].shape == (30, 12, 4)
        assert tuple(archive["feature_names"].tolist()) == FEATURE_NAMES and int(archive["seed"]) == 4
        assert archive["steps"].shape == () and float(archive["k_couple"]) == p.k_couple
    assert load_springs_params(path) == p
    assert tuple(load_array(path).shape) == (30, 12, 4)  # the points loader picks the "x" array


def test_save_refuses_directories_and_other_extensions(tmp_path):
    with pytest.raises(FluxMatchError, match="directory"):
        save_springs(tmp_path, 3)
    (tmp_path / "d.npz").mkdir()
    with pytest.raises(FluxMatchError, match="directory"):
        save_springs(tmp_path / "d.npz", 3)
    with pytest.raises(FluxMatchError):
        save_springs(tmp_path / "x.npy", 3)


def test_load_params_of_other_files(tmp_path):
    plain = tmp_path / "plain.npz"
    np.savez(plain, x=np.zeros((2, 3, 4)), dt=np.asarray(0.1))
    assert load_springs_params(plain) is None
    with pytest.raises(FluxMatchError):
        load_springs_params(tmp_path / "missing.npz")
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip")
    with pytest.raises(FluxMatchError):
        load_springs_params(broken)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{**SpringParams().as_dict(), "dt": np.asarray(-1.0)})
    with pytest.raises(FluxMatchError):
        load_springs_params(bad)
