"""The stationarity residual r = ∇·u + u·s and its gradient against closed forms."""

import torch

from fluxmatch.fields import MLPField
from fluxmatch.reference import GaussianMixture
from fluxmatch.stationarity import field_and_divergence, residual_and_gradient, stationarity_residual

MIXTURE = GaussianMixture(torch.tensor([[-1.0, 0.0], [1.5, 1.0]]), torch.tensor([0.4, 0.6]))


def test_score_plus_constant_has_residual_a_dot_s():
    """u = a (constant): r = a·s and ∇r = ∇s a (MATH.md §2, f = s + a)."""
    a = torch.tensor([0.7, -0.4])

    def field(z, c):
        z = z if z.requires_grad else z.requires_grad_(True)
        return torch.autograd.grad(MIXTURE.log_prob(z).sum(), z, create_graph=True)[0] + a

    z = MIXTURE.sample(50, torch.Generator().manual_seed(0))
    res = residual_and_gradient(field, MIXTURE, z)
    d = MIXTURE.derivatives(z, a.expand(50, 2))
    assert torch.allclose(res.value, d.score @ a, atol=1e-3)
    assert torch.allclose(res.gradient, d.hessian_v, atol=1e-3)


def test_residual_has_zero_mean_under_p():
    """E_p[r] = 0 for any field (integration by parts): a random MLP, 200k samples."""
    torch.manual_seed(1)
    field = MLPField(2, (32, 32))
    z = MIXTURE.sample(200_000, torch.Generator().manual_seed(1))
    with torch.no_grad():
        r = stationarity_residual(field, MIXTURE, z)
    assert abs(float(r.mean())) < 5 * float(r.std()) / len(r) ** 0.5


def test_forward_mode_divergence_matches_autograd():
    torch.manual_seed(2)
    for cond in (None, "sigma"):
        field = MLPField(3, (16, 16), cond)
        z = torch.randn(7, 3, requires_grad=True)
        c = torch.full((7,), 0.3)
        f1, div1 = field_and_divergence(field, z, c, "exact")
        f2, div2 = field_and_divergence(lambda x, c_: field(x, c_), z, c, "exact")
        assert torch.allclose(f1, f2) and torch.allclose(div1, div2, atol=1e-5)
        jac = torch.autograd.functional.jacobian(lambda x: field(x, c).sum(0), z).permute(1, 0, 2)
        assert torch.allclose(div1, jac.diagonal(dim1=1, dim2=2).sum(-1), atol=1e-5)
