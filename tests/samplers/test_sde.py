"""Noise-annealed samplers (reverse VE SDE, probability-flow ODE, predictor-corrector) against closed forms.

Two kinds of checks. With the exact σ-conditioned score of a Gaussian N(M, S2·I) every sampler is
linear, so its output law (SDE: the Euler-Maruyama moment recursion) or its output itself (ODE:
x(σ) = M + (x(σ_0) − M) sqrt((S2 + σ²)/(S2 + σ_0²))) is known exactly; these pin each update
formula. With the exact score of a 2-D three-component mixture every sampler must draw the
mixture: component weights, means, variances and W2 to fresh draws, within Monte Carlo error
plus the discretisation bias measured at the budgets used.
"""

import math

import pytest
import torch
from torch import nn

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import MLPField
from fluxmatch.metrics import wasserstein2
from fluxmatch.reference import GaussianMixture
from fluxmatch.samplers import (
    AnnealedResult,
    edm_sigmas,
    predictor_corrector,
    prior_sample,
    probability_flow,
    reverse_sde,
)

MIXTURE = GaussianMixture(
    torch.tensor([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]]), torch.tensor([0.09, 0.16, 0.04]), torch.tensor([0.5, 0.3, 0.2])
)


class MixtureScore(nn.Module):
    """The exact σ-conditioned field ∇log(p ∗ N(0, σ²I)) of MIXTURE, one σ per call, as the samplers call it."""

    def forward(self, x, sigma):
        assert sigma.shape == (x.shape[0],) and sigma.dtype == x.dtype and bool((sigma == sigma[0]).all())
        return MIXTURE.smoothed(float(sigma[0])).score(x.float()).to(x.dtype)


M, S2 = 0.7, 0.25  # the Gaussian N(M, S2·I), any event shape


def gaussian_score(x, sigma):
    """Exact score of N(M, (S2 + σ²) I): −(x − M)/(S2 + σ²), σ (B,) broadcast over the event."""
    return -(x - M) / (S2 + sigma.reshape(-1, *[1] * (x.dim() - 1)) ** 2)


def gaussian_flow(x0, sigma0, sigma1):
    """The probability-flow ODE's exact solution for N(M, S2·I) from σ_0 to σ_1 > 0."""
    return M + (x0 - M) * math.sqrt((S2 + sigma1**2) / (S2 + sigma0**2))


# Budgets at which the discretisation bias is small, measured with 40000 samples from the same
# prior draw (component variance ratio − 1 at most / |mean shift| at most):
# reverse SDE 250 EDM steps 0.06 / 0.006; Euler 100 steps 0.02 / 0.025; Heun 30 steps (59 NFE)
# 0.05 / 0.015; dopri5 0.01 / 0.004; PC (SDE predictor) 100 steps 0.06 / 0.003; PC (ODE) 50
# steps 0.07 / 0.02. The reverse SDE's bias is Euler-Maruyama's first-order error (0.3 at 50 steps).
SAMPLERS = {
    "reverse_sde": lambda x, gen: reverse_sde(MixtureScore(), x, edm_sigmas(250), generator=gen),
    "euler": lambda x, gen: probability_flow(MixtureScore(), x, edm_sigmas(100), method="euler"),
    "heun": lambda x, gen: probability_flow(MixtureScore(), x, edm_sigmas(30), method="heun"),
    "dopri5": lambda x, gen: probability_flow(MixtureScore(), x, edm_sigmas(18), method="dopri5"),
    "pc_sde": lambda x, gen: predictor_corrector(MixtureScore(), x, edm_sigmas(100), predictor="sde", generator=gen),
    "pc_ode": lambda x, gen: predictor_corrector(MixtureScore(), x, edm_sigmas(50), predictor="ode", generator=gen),
}
N = 8000
N_W2 = 2000
MEAN_BIAS = 0.04
VARIANCE_BIAS = 0.1
# W2 between two independent 2000-point draws of MIXTURE (40 seed pairs): mean 0.26, sd 0.086,
# max 0.45; it is dominated by the multinomial fluctuation of the component masses. The bound is
# that mean + 4 sd, which also covers the bias above (a W2 of a few hundredths).
W2_BOUND = 0.6


def mixture_mismatches(x):
    """The checks of x (N, 2) against MIXTURE that fail, as a list of strings (empty: all pass).

    Per component: binomial count, normal mean, and sample variance pooled over 2 coordinates
    (relative sd sqrt(1/n_k)), each within 4 standard errors plus the discretisation allowance;
    then W2 of the first 2000 points to a fresh draw.
    """
    failures = []
    labels = MIXTURE.posterior(x.float()).argmax(1)  # the components are > 6 sd apart: labels are exact
    for k in range(3):
        pi, mu, v = float(MIXTURE.weights[k]), MIXTURE.means[k], float(MIXTURE.variances[k])
        members = x[labels == k].float()
        n_k = members.shape[0]
        if abs(n_k / N - pi) > 4 * math.sqrt(pi * (1 - pi) / N):
            failures.append(f"component {k}: {n_k} points")
            continue
        if (members.mean(0) - mu).abs().max() > 4 * math.sqrt(v / n_k) + MEAN_BIAS:
            failures.append(f"component {k}: mean {members.mean(0).tolist()}")
        ratio = float(members.var(0).mean()) / v
        if abs(ratio - 1) > 4 / math.sqrt(n_k) + VARIANCE_BIAS:
            failures.append(f"component {k}: variance ratio {ratio:.3f}")
    w2 = wasserstein2(x[:N_W2], MIXTURE.sample(N_W2, torch.Generator().manual_seed(1)))
    if w2 > W2_BOUND:
        failures.append(f"W2 {w2:.3f}")
    return failures


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_every_sampler_draws_the_mixture(name):
    gen = torch.Generator().manual_seed(0)
    x0 = prior_sample((N, 2), 80.0, gen)
    result = SAMPLERS[name](x0, gen)
    assert isinstance(result, AnnealedResult) and result.samples.shape == (N, 2)
    assert mixture_mismatches(result.samples) == []


def test_the_mixture_check_can_fail():
    """A reverse SDE whose drift is 1.5 times too strong (a wrong step coefficient) is caught."""
    gen = torch.Generator().manual_seed(0)
    x0 = prior_sample((N, 2), 80.0, gen)

    def too_strong(x, sigma):
        return 1.5 * MixtureScore()(x, sigma)

    failures = mixture_mismatches(reverse_sde(too_strong, x0, edm_sigmas(250), generator=gen).samples)
    assert failures  # it distorts the component masses and W2


def em_moments(sigmas, mean0, var0):
    """Mean and variance of x − M after Euler-Maruyama of the reverse SDE with the Gaussian score.

    Step: x − M ← (1 − Δ/(S2 + σ_i²))(x − M) + sqrt(Δ) ξ, Δ = σ_i² − σ_{i+1}², no noise to σ = 0.
    """
    mean, var = mean0, var0
    for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        delta = s**2 - s_next**2
        a = 1 - delta / (S2 + s**2)
        mean, var = a * mean, a**2 * var + (delta if s_next > 0 else 0.0)
    return mean, var


def test_reverse_sde_follows_the_euler_maruyama_moment_recursion():
    sigmas = edm_sigmas(8, sigma_min=0.01, sigma_max=20.0)
    gen = torch.Generator().manual_seed(0)
    x0 = prior_sample((4000, 8, 8), 20.0, gen, dtype=torch.float64)  # 256000 iid coordinates
    x = reverse_sde(gaussian_score, x0, sigmas, generator=gen).samples
    # x0 is the realised start, so condition on its empirical moments (the recursion is linear).
    mean, var = em_moments(sigmas, float(x0.mean()) - M, float(x0.var()))
    n = x.numel()
    assert abs(float(x.mean()) - M - mean) < 5 * math.sqrt(var / n)
    assert abs(float(x.var()) - var) < 5 * math.sqrt(2 / n) * var
    # Eight steps leave a large first-order error, so the check tells the scheme from the exact law.
    assert abs(var - S2) > 50 * math.sqrt(2 / n) * var


def test_predictor_corrector_without_corrector_is_the_reverse_sde():
    sigmas = edm_sigmas(6, 0.01, 10.0)
    x0 = prior_sample((50, 3), 10.0, torch.Generator().manual_seed(2), dtype=torch.float64)
    sde = reverse_sde(gaussian_score, x0, sigmas, generator=torch.Generator().manual_seed(3))
    pc = predictor_corrector(gaussian_score, x0, sigmas, corrector_steps=0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(sde.samples, pc.samples) and sde.nfe == pc.nfe == 6


@pytest.mark.parametrize("predictor", ["sde", "ode"])
def test_predictor_corrector_step_by_hand(predictor):
    x0 = prior_sample((6, 2), 3.0, torch.Generator().manual_seed(4), dtype=torch.float64)
    result = predictor_corrector(gaussian_score, x0, [3.0, 1.0, 0.0], predictor=predictor, snr=0.2, generator=torch.Generator().manual_seed(5))

    def score(x, s):
        return gaussian_score(x, torch.full((x.shape[0],), s, dtype=x.dtype))

    gen = torch.Generator().manual_seed(5)
    if predictor == "sde":
        x = x0 + 8.0 * score(x0, 3.0) + math.sqrt(8.0) * torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    else:
        x = x0 + 3.0 * 2.0 * score(x0, 3.0)
    xi, g = torch.randn(x.shape, generator=gen, dtype=x.dtype), score(x, 1.0)
    eps = 2 * (0.2 * xi.norm(dim=1).mean() / g.norm(dim=1).mean()) ** 2  # Song et al.'s step, norms averaged over the batch
    x = x + eps * g + (2 * eps).sqrt() * xi
    x = x + 1.0 * score(x, 1.0)  # the denoising step to σ = 0, uncorrected
    assert torch.allclose(result.samples, x, rtol=1e-12, atol=1e-12)
    assert result.nfe == 3


def test_corrector_steps_pull_a_coarse_sde_towards_the_target():
    """At 12 coarse levels the SDE's variance is far off (0.26 against S2 = 0.25); Langevin
    correctors at each level shrink the error (measured: 0.05 with 5 corrector steps)."""
    sigmas = edm_sigmas(12, 0.01, 20.0)
    x0 = prior_sample((2000, 64), 20.0, torch.Generator().manual_seed(6), dtype=torch.float64)
    errors = []
    for steps in (0, 5):
        x = predictor_corrector(gaussian_score, x0, sigmas, corrector_steps=steps, generator=torch.Generator().manual_seed(7)).samples
        errors.append(abs(float((x - M).square().mean()) - S2))
    # Each error is ≫ its Monte Carlo sd (S2 sqrt(2/128000) ≈ 0.001).
    assert errors[1] < 0.5 * errors[0], errors


def test_probability_flow_matches_the_gaussian_flow_in_any_event_shape():
    sigmas = edm_sigmas(10, sigma_min=0.002, sigma_max=80.0)
    x0 = prior_sample((5, 3, 4), 80.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    at_min = gaussian_flow(x0, 80.0, 0.002)
    exact = M + (at_min - M) * S2 / (S2 + 0.002**2)  # then the denoising step x + σ_min² f
    result = probability_flow(gaussian_score, x0, sigmas, method="dopri5", rtol=1e-8, atol=1e-8)
    assert result.samples.shape == (5, 3, 4) and result.samples.dtype == torch.float64
    assert (result.samples - exact).abs().max() < 1e-6
    # Without the final 0 dopri5 stops at σ_min.
    assert (probability_flow(gaussian_score, x0, sigmas[:-1], method="dopri5", rtol=1e-8, atol=1e-8).samples - at_min).abs().max() < 1e-6


@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2)])
def test_fixed_step_probability_flow_reaches_its_order(method, order):
    x0 = prior_sample((5, 3), 80.0, torch.Generator().manual_seed(1), dtype=torch.float64)
    errors = []
    for n in (20, 40, 80):
        sigmas = edm_sigmas(n)[:-1]  # stop at σ_min, where the exact flow is known
        errors.append(float((probability_flow(gaussian_score, x0, sigmas, method=method).samples - gaussian_flow(x0, 80.0, 0.002)).abs().max()))
    for coarse, fine in zip(errors[:-1], errors[1:]):
        assert abs(math.log2(coarse / fine) - order) < 0.3, errors


class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, sigma):
        self.calls += 1
        return gaussian_score(x, sigma)


SCHEDULE = edm_sigmas(5, 0.01, 10.0)  # 5 steps, the last to σ = 0


@pytest.mark.parametrize(
    "run,sigmas,expected",
    [
        (lambda f, x, s: reverse_sde(f, x, s), SCHEDULE, 5),
        (lambda f, x, s: probability_flow(f, x, s, method="euler"), SCHEDULE, 5),
        (lambda f, x, s: probability_flow(f, x, s, method="heun"), SCHEDULE, 2 * 5 - 1),  # Euler on the step to 0
        (lambda f, x, s: probability_flow(f, x, s, method="heun"), SCHEDULE[:-1], 2 * 4),
        (lambda f, x, s: predictor_corrector(f, x, s, corrector_steps=2), SCHEDULE, 5 + 2 * 4),  # no corrector at σ = 0
        (lambda f, x, s: predictor_corrector(f, x, s, predictor="ode", corrector_steps=2), SCHEDULE[:-1], 4 + 2 * 4),
    ],
)
def test_nfe_is_exact(run, sigmas, expected):
    field = Counting()
    result = run(field, torch.randn(7, 2, dtype=torch.float64) * 10, sigmas)
    assert result.nfe == field.calls == expected


def test_dopri5_counts_its_evaluations_and_the_denoising_step():
    x0 = prior_sample((7, 2), 10.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    with_zero, without = Counting(), Counting()
    a = probability_flow(with_zero, x0, SCHEDULE, method="dopri5")
    b = probability_flow(without, x0, SCHEDULE[:-1], method="dopri5")
    assert a.nfe == with_zero.calls and b.nfe == without.calls
    assert a.nfe == b.nfe + 1 > 6  # the same integration, plus one denoising evaluation


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_recording_a_fixed_step_run(method):
    x0 = prior_sample((4, 2), 10.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    result = probability_flow(gaussian_score, x0, SCHEDULE, method=method, record=True)
    assert result.trajectory.shape == (6, 4, 2)
    assert torch.equal(result.sigmas, SCHEDULE)
    assert torch.equal(result.trajectory[0], x0) and torch.equal(result.trajectory[-1], result.samples)
    assert probability_flow(gaussian_score, x0, SCHEDULE, method=method).trajectory is None
    sde = reverse_sde(gaussian_score, x0, SCHEDULE, record=True, generator=torch.Generator().manual_seed(1))
    assert sde.trajectory.shape == (6, 4, 2) and torch.equal(sde.trajectory[-1], sde.samples)


def test_recording_dopri5_gives_the_dense_solution():
    x0 = prior_sample((4, 2), 10.0, torch.Generator().manual_seed(0), dtype=torch.float64)
    result = probability_flow(gaussian_score, x0, SCHEDULE, method="dopri5", record=True, rtol=1e-8, atol=1e-8)
    assert result.trajectory.shape == (6, 4, 2) and result.sigmas.shape == (6,)
    assert result.sigmas[0] == pytest.approx(10.0) and result.sigmas[-2] == pytest.approx(0.01) and result.sigmas[-1] == 0
    assert torch.equal(result.trajectory[-1], result.samples)
    for frame, sigma in zip(result.trajectory[1:-1], result.sigmas[1:-1].tolist()):  # evenly spaced in ln σ
        assert (frame - gaussian_flow(x0, 10.0, sigma)).abs().max() < 1e-5


def test_samplers_run_without_grad_and_keep_the_dtype():
    torch.manual_seed(0)
    field = MLPField(2, (16,), conditioning="sigma")
    x0 = prior_sample((5, 2), 10.0)
    for result in (
        reverse_sde(field, x0, SCHEDULE, progress=True),
        probability_flow(field, x0, SCHEDULE, method="heun", progress=True),
        probability_flow(field, x0, SCHEDULE, method="dopri5"),
        predictor_corrector(field, x0, SCHEDULE, progress=True),
    ):
        assert not result.samples.requires_grad and result.samples.dtype == torch.float32
        assert torch.isfinite(result.samples).all()
    integer_start = probability_flow(gaussian_score, torch.ones(3, 2, dtype=torch.long), [2.0, 1.0, 0.0], method="euler")
    assert integer_start.samples.dtype == torch.get_default_dtype()


def nan_field(x, sigma):
    return torch.where(sigma[:, None] < 1.0, torch.full_like(x, float("nan")), gaussian_score(x, sigma))


@pytest.mark.parametrize(
    "run",
    [
        lambda f, x, s: reverse_sde(f, x, s),
        lambda f, x, s: probability_flow(f, x, s, method="heun"),
        lambda f, x, s: probability_flow(f, x, s, method="dopri5"),
        lambda f, x, s: predictor_corrector(f, x, s),
    ],
)
def test_bad_inputs_raise(run):
    x = torch.randn(4, 2, dtype=torch.float64)
    with pytest.raises(FluxMatchError, match="strictly decreasing"):
        run(gaussian_score, x, [0.1, 1.0, 10.0])
    with pytest.raises(FluxMatchError, match="final 0"):
        run(gaussian_score, x, [1.0, 0.0, -1.0])
    with pytest.raises(FluxMatchError, match=r"NaN or infinite values at σ = 0\.\d"):  # dopri5 meets σ < 1 between levels
        run(nan_field, x, [4.0, 2.0, 0.5, 0.0])
    with pytest.raises(FluxMatchError, match="shape"):
        run(lambda y, s: y[:, :1], x, [2.0, 1.0, 0.0])
    with pytest.raises(FluxMatchError, match="NaN"):
        run(gaussian_score, torch.full((2, 2), float("nan")), [2.0, 1.0, 0.0])
    with pytest.raises(FluxMatchError, match="batch"):
        run(gaussian_score, torch.tensor(1.0), [2.0, 1.0, 0.0])


def test_a_blow_up_names_the_step():
    def exploding(x, sigma):  # finite itself, but the step from σ = 2 to 1 overflows float32
        return torch.where(sigma[:, None] < 3.0, torch.full_like(x, 2e38), torch.zeros_like(x))

    x = torch.ones(3, 2)
    with pytest.raises(FluxMatchError, match=r"diverged at step 1 \(σ = 2"):
        reverse_sde(exploding, x, [4.0, 2.0, 1.0, 0.0])
    with pytest.raises(FluxMatchError, match="diverged at step"):
        probability_flow(exploding, x, [4.0, 2.0, 1.0, 0.0], method="euler")


def test_bad_options_raise():
    x = torch.randn(4, 2)
    with pytest.raises(FluxMatchError, match="unknown probability-flow method"):
        probability_flow(gaussian_score, x, SCHEDULE, method="rk4")
    with pytest.raises(FluxMatchError, match="tolerances"):
        probability_flow(gaussian_score, x, SCHEDULE, method="dopri5", rtol=0.0)
    with pytest.raises(FluxMatchError, match="unknown predictor"):
        predictor_corrector(gaussian_score, x, SCHEDULE, predictor="heun")
    for steps in (-1, 1.5, True):
        with pytest.raises(FluxMatchError, match="corrector_steps"):
            predictor_corrector(gaussian_score, x, SCHEDULE, corrector_steps=steps)
    with pytest.raises(FluxMatchError, match="snr"):
        predictor_corrector(gaussian_score, x, SCHEDULE, snr=0.0)
    with pytest.raises(FluxMatchError, match="sigma_max"):
        prior_sample((3, 2), -1.0)
