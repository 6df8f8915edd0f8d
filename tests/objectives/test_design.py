"""Design terms against hand-made fields with closed-form values, and WithDesign's bookkeeping."""

import math

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import MLPField
from fluxmatch.objectives import (
    DESIGN_TERMS,
    AnnealedDSM,
    CurlTarget,
    DenoisingScoreMatching,
    FastMixing,
    FlowMatching,
    FluxMatching,
    JacobianSkew,
    JacobianSparsity,
    Rotation,
    WithDesign,
    build_objective,
    design_terms,
    make_term,
)
from fluxmatch.objectives.design import sinkhorn_divergence
from fluxmatch.reference import GaussianMixture

M = torch.tensor([[0.5, 2.0], [-1.0, -0.3]])  # a linear field f = Mx: J = M everywhere


def spin(x, c):
    """R₉₀ x = (−y, x): counter-clockwise, |f| = |x|, curl 2."""
    return torch.stack([-x[:, 1], x[:, 0]], 1)


def linear(matrix):
    return lambda x, c: x @ matrix.T


def test_rotation_closed_forms():
    angles = torch.rand(32) * 2 * math.pi
    circle = torch.stack([angles.cos(), angles.sin()], 1)
    assert torch.allclose(Rotation()(spin, circle, None), torch.full((32,), -1.0))  # −f·t = −1 on the unit circle
    assert torch.allclose(Rotation()(lambda x, c: -spin(x, c), circle, None), torch.full((32,), 1.0))  # clockwise is penalised
    assert torch.allclose(Rotation()(lambda x, c: x, circle, None), torch.zeros(32), atol=1e-6)  # radial flow: no reward
    # about another centre: the tangent is taken relative to it
    assert torch.allclose(Rotation(center=(1.0, 0.0))(lambda x, c: spin(x - torch.tensor([1.0, 0.0]), c), circle * 2 + torch.tensor([1.0, 0.0]), None), torch.full((32,), -2.0))
    # a target speed: (f·t − 0.5)² = 0.25 at radius 1
    assert torch.allclose(Rotation(speed=0.5)(spin, circle, None), torch.full((32,), 0.25))
    # any dimension with a direction field g: −f·g
    x3 = torch.randn(8, 3)
    direction = lambda x: torch.ones_like(x)  # noqa: E731
    assert torch.allclose(Rotation(direction_field=direction)(lambda x, c: x, x3, None), -x3.sum(1))
    with pytest.raises(FluxMatchError, match="2-D"):
        Rotation()(lambda x, c: x, x3, None)


def test_curl_target_is_exact_and_differentiable():
    weight = torch.nn.Parameter(M.clone())
    x = torch.randn(16, 2)
    value = CurlTarget(target=1.0)(lambda z, c: z @ weight.T, x, None)
    curl = float(M[1, 0] - M[0, 1])  # −3
    assert torch.allclose(value, torch.full((16,), (curl - 1.0) ** 2))
    (grad,) = torch.autograd.grad(value.mean(), weight)
    # d/dM (M₁₀ − M₀₁ − 1)² = 2(curl − 1)·(+1 at [1, 0], −1 at [0, 1])
    expected = torch.zeros(2, 2)
    expected[1, 0], expected[0, 1] = 2 * (curl - 1.0), -2 * (curl - 1.0)
    assert torch.allclose(grad, expected)
    assert torch.allclose(CurlTarget(2.0)(spin, x, None), torch.zeros(16), atol=1e-6)  # curl of R₉₀x is 2


def test_jacobian_skew_and_sparsity_closed_forms():
    x = torch.randn(16, 2)
    J = torch.tensor([[0.0, 1.5], [-1.5, 0.0]])
    assert torch.allclose(JacobianSkew()(linear(J), x, None), torch.full((16,), float(J.square().sum())))  # |J|_F² = 4.5
    skew = 0.5 * (M - M.T)
    assert torch.allclose(JacobianSkew()(linear(M), x, None), torch.full((16,), float(skew.square().sum())))
    assert torch.allclose(JacobianSkew(sign=-1)(linear(M), x, None), torch.full((16,), -float(skew.square().sum())))
    assert torch.allclose(JacobianSkew()(linear(M + M.T), x, None), torch.zeros(16))  # symmetric: 0
    assert torch.allclose(JacobianSparsity()(linear(M), x, None), torch.full((16,), 3.0))  # |2| + |−1|
    with pytest.raises(FluxMatchError, match="sign"):
        JacobianSkew(sign=2)


def test_hutchinson_skew_is_unbiased_in_high_dimension():
    torch.manual_seed(0)
    d = 12
    A = torch.randn(d, d)
    exact = float((0.5 * (A - A.T)).square().sum())
    term = JacobianSkew(exact_max_dim=4, n_probes=2)
    values = term(linear(A), torch.randn(4000, d), None)  # one estimate per point, independent probes
    se = float(values.std()) / math.sqrt(4000)
    assert abs(float(values.mean()) - exact) < 4 * se, (float(values.mean()), exact, se)  # 4 standard errors
    # and it is differentiable in the field's parameters
    weight = torch.nn.Parameter(A.clone())
    (grad,) = torch.autograd.grad(term(lambda z, c: z @ weight.T, torch.randn(64, d), None).mean(), weight)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_sinkhorn_divergence_of_a_translation():
    """Squared cost: OT(a, a + c) = OT(a, a) + |c|² for any coupling with the right marginals, so
    S(a, a + c) = |c|² once the iterations have converged; S(a, a) = 0."""
    torch.manual_seed(1)
    a = torch.randn(48, 2)
    c = torch.tensor([0.6, -0.3])
    assert float(sinkhorn_divergence(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(sinkhorn_divergence(a, a + c, epsilon=0.05, scaling=0.9)) == pytest.approx(float(c.square().sum()), rel=0.01)


def test_fast_mixing_prefers_the_faster_field_and_is_differentiable():
    """One step of the exact score closes more of the gap to p_σ than one of 0.1·score."""
    sigma = 0.5
    gaussian = GaussianMixture(torch.tensor([[1.0, -0.5]]), sigma**2)
    term = FastMixing()
    values = {1.0: [], 0.1: []}
    grads = []
    for seed in range(3):
        for k in values:
            torch.manual_seed(seed)
            scale = torch.tensor(k, requires_grad=True)
            v = term(lambda x, c: scale * gaussian.score(x), gaussian.sample(256), torch.full((256,), sigma))
            assert v.shape == (256,) and bool((v == v[0]).all())  # the batch value on every row
            values[k].append(float(v[0].detach()))
            if k == 0.1:
                grads.append(float(torch.autograd.grad(v.mean(), scale)[0]))
    # measured over 6 seeds: 0.55–0.80 for the score, 1.2–1.55 for 0.1·score
    assert max(values[1.0]) < min(values[0.1]) and sum(values[1.0]) < 0.7 * sum(values[0.1]), values
    # a larger drift scale mixes faster: the term decreases with it (measured −0.85 to −1.07)
    assert all(g < -0.3 for g in grads), grads
    with pytest.raises(FluxMatchError, match="at least 4"):
        term(lambda x, c: x, torch.zeros(3, 2), torch.ones(3))


def test_with_design_adds_weighted_terms_and_logs_them():
    x = torch.randn(64, 2)
    field = linear(M)
    base = DenoisingScoreMatching(0.3)
    objective = WithDesign(base, {"skew": (0.5, JacobianSkew()), "sparse": (-2.0, JacobianSparsity())})
    torch.manual_seed(3)
    out = objective(field, x)
    torch.manual_seed(3)
    base_out = base(field, x)  # the base runs first, on the same random numbers
    skew = float((0.5 * (M - M.T)).square().sum())
    assert torch.allclose(out.loss, base_out.loss + 0.5 * skew - 2.0 * 3.0)
    assert out.terms["dsm"] == pytest.approx(base_out.terms["dsm"])
    assert out.terms["skew"] == pytest.approx(skew) and out.terms["sparse"] == pytest.approx(3.0)


def test_with_design_start_points_come_from_the_base():
    """Start points x + σε: fixed σ for a fixed-σ base (or draws from an analytic reference),
    one σ per row for a noise-annealed base, one σ per batch for a stationary-only term."""
    seen = {}

    class Probe(torch.nn.Module):
        def __init__(self, key, shared=False):
            super().__init__()
            self.key = key
            self.stationary_only = shared

        def forward(self, field, x0, sigma, labels=None):
            seen[self.key] = (x0.detach(), sigma.detach())
            return torch.zeros(x0.shape[0])

    x = torch.zeros(512, 2)
    WithDesign(DenoisingScoreMatching(0.3), {"p": (1.0, Probe("fixed"))})(spin, x)
    x0, sigma = seen["fixed"]
    assert bool((sigma == 0.3).all()) and abs(float(x0.std()) - 0.3) < 0.03  # std of 1024 draws: ±2%
    reference = GaussianMixture(torch.tensor([[5.0, 5.0]]), 0.01)
    WithDesign(DenoisingScoreMatching(0.3), {"p": (1.0, Probe("ref"))})(spin, x, reference)
    assert (seen["ref"][0].mean(0) - 5.0).abs().max() < 0.05
    field = MLPField(2, (8,), conditioning="sigma")
    WithDesign(AnnealedDSM(normaliser=False), {"p": (1.0, Probe("rows")), "q": (1.0, Probe("batch", shared=True))})(field, x)
    rows, batch = seen["rows"][1], seen["batch"][1]
    assert rows.unique().numel() > 100 and batch.unique().numel() == 1


def test_with_design_config_rebuilds_and_param_groups_delegate():
    base = FluxMatching(0.3, dim=2, potential_hidden=(8,))
    terms = {"rotation": (0.05, Rotation(center=(0.5, 0.0), speed=1.0)), "mixing": (0.01, FastMixing(step_size=0.02))}
    objective = WithDesign(base, terms)
    config = objective.config
    assert config["name"] == "designed" and config["base"] == base.config
    assert [t["name"] for t in config["terms"]] == ["rotation", "mixing"] and config["terms"][0]["kind"] == "rotation"
    rebuilt = build_objective(config)
    assert isinstance(rebuilt, WithDesign) and rebuilt.config == config
    rebuilt.load_state_dict(objective.state_dict())  # same structure: checkpoints reload
    field = MLPField(2, (8,))
    groups = objective.param_groups(field, 1e-3)
    assert [g["lr"] for g in groups] == [g["lr"] for g in base.param_groups(field, 1e-3)]
    out = objective(field, torch.randn(32, 2))
    out.loss.mean().backward()
    assert set(out.terms) >= {"rotation", "mixing", "potential_fit"}
    assert all(p.grad is not None for p in field.parameters())


def test_flow_base_takes_pointwise_terms_only():
    field = MLPField(2, (8,), conditioning="time")
    out = WithDesign(FlowMatching(), {"curl": (1.0, CurlTarget(0.0))})(field, torch.randn(16, 2))
    assert out.loss.shape == (16,) and "curl" in out.terms and "fm" in out.terms
    with pytest.raises(FluxMatchError, match="stationary"):
        WithDesign(FlowMatching(), {"mixing": (0.01, FastMixing())})


def test_design_terms_from_weights_and_bad_configs():
    terms = design_terms({"rotation": 0.05, "skew": 0.1, "curl": 0.0, "mixing": 0.01}, mixing_step_size=0.05)
    assert set(terms) == {"rotation", "skew", "mixing"}  # zero weights are left out
    assert terms["skew"][1].sign == -1.0 and terms["mixing"][1].step_size == 0.05
    with pytest.raises(FluxMatchError, match="unknown design term"):
        design_terms({"bogus": 1.0})
    with pytest.raises(FluxMatchError, match="unknown design term"):
        WithDesign(DenoisingScoreMatching(), [{"name": "a", "weight": 1.0, "kind": "bogus"}])
    with pytest.raises(FluxMatchError, match="at least one"):
        WithDesign(DenoisingScoreMatching(), {})
    with pytest.raises(FluxMatchError, match="finite"):
        WithDesign(DenoisingScoreMatching(), {"r": (float("nan"), Rotation())})
    with pytest.raises(FluxMatchError, match="direction field"):
        _ = WithDesign(DenoisingScoreMatching(), {"r": (1.0, Rotation(direction_field=lambda x: x))}).config


def test_one_registry_gives_the_terms_their_command_line_meaning():
    """"skew" rewards the antisymmetric Jacobian wherever it is named; a stored sign is kept."""
    assert set(DESIGN_TERMS) == {"rotation", "curl", "skew", "sparsity", "mixing"}
    assert DESIGN_TERMS["skew"]().sign == -1.0 and make_term({"kind": "skew"}).sign == -1.0
    assert design_terms({"skew": 0.1})["skew"][1].sign == -1.0
    assert make_term({"kind": "skew", "sign": 1.0, "exact_max_dim": 8, "n_probes": 1}).sign == 1.0
    x = torch.randn(8, 2)
    assert torch.allclose(make_term({"kind": "skew"})(linear(M), x, None), -JacobianSkew()(linear(M), x, None))
    terms = design_terms({name: 1.0 for name in DESIGN_TERMS}, mixing_step_size=0.05)
    for name, (_, term) in terms.items():
        assert make_term(term.config).config == term.config, name
    with pytest.raises(FluxMatchError, match="bad options for the curl"):
        make_term({"kind": "curl", "bogus": 1})


def test_with_design_on_the_merged_objectives():
    """A fixed or a drawn σ from the base's noise; the base's noise and σ show through."""
    fixed, annealed = WithDesign(FluxMatching(0.3, dim=2), {"r": (0.1, Rotation())}), WithDesign(FluxMatching(noise="edm", dim=2), {"r": (0.1, Rotation())})
    assert (fixed.sigma, fixed.noise.kind) == (0.3, "fixed") and (annealed.sigma, annealed.noise.kind) == (None, "edm")
    assert torch.equal(fixed.draw_sigma(4), torch.full((4,), 0.3)) and annealed.draw_sigma(64).unique().numel() == 64
    out = annealed(MLPField(2, (8,), conditioning="sigma"), torch.randn(32, 2))
    assert out.loss.shape == (32,) and {"r", "potential_fit"} <= set(out.terms)
    assert build_objective(annealed.config).config == annealed.config
    with pytest.raises(FluxMatchError, match="no noise distribution"):
        WithDesign(FlowMatching(), {"c": (1.0, CurlTarget())}).draw_sigma(2)


@pytest.mark.slow
def test_rotation_turns_the_learned_flux_field_without_moving_its_samples(tmp_path):
    """Flux Matching on the ring, with and without a rotation reward (weight 1, 1000 steps, ≈ 10 s).

    Measured over seeds 0–2: W2 to held-out data 0.54–0.59 without, 0.53–0.57 with (two-sample
    floor 0.39); mean curl at the data 0.05–0.14 without, 1.0–1.15 with."""
    from fluxmatch.data import DataSource
    from fluxmatch.metrics import curl_2d, wasserstein2
    from fluxmatch.samplers import langevin
    from fluxmatch.train import TrainConfig, Trainer

    data = DataSource.from_spec("ring", seed=0)
    held_out = data.holdout(600, seed=3)
    results = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        field = MLPField(2, (64, 64))
        objective = FluxMatching(sigma=0.2236, dim=2)
        if weight:
            objective = WithDesign(objective, {"rotation": (weight, Rotation())})
        config = TrainConfig(steps=1000, batch_size=256, seed=0, progress=False, checkpoint_every=1000)
        Trainer(field, objective, data, config, tmp_path / str(weight)).fit()
        gen = torch.Generator().manual_seed(11)
        start = data.data.mean(0) + data.data.std(0) * torch.randn(600, 2, generator=gen)
        samples = langevin(field, start, step_size=0.01, n_steps=800, generator=gen).samples
        results[weight] = (wasserstein2(samples, held_out), float(curl_2d(field, held_out).mean()))
    (w2_plain, curl_plain), (w2_turned, curl_turned) = results[0.0], results[1.0]
    assert w2_turned < 0.7 and w2_turned < w2_plain + 0.1, results  # the samples stay on the data
    assert curl_turned > 0.7 and curl_turned > 4 * abs(curl_plain), results  # the field turns (≥ 7× measured)
