"""Field diagnostics: Jacobians, divergence and curl of fields with known derivatives."""

import numpy as np
import pytest
import torch
from torch import nn

from fluxmatch.errors import FluxMatchError
from fluxmatch.metrics import curl_2d, divergence_field, field_on_grid, jacobian, mean_abs_curl
from fluxmatch.metrics import fields as fields_module


def rotation(x, cond):
    return torch.stack([-x[:, 1], x[:, 0]], 1)


def gradient_field(x, cond):
    # ∇φ for φ = x² y + sin(x) + y³/3: a gradient, so its curl vanishes.
    px, py = x[:, 0], x[:, 1]
    return torch.stack([2 * px * py + torch.cos(px), px**2 + py**2], 1)


def points(n=500, d=2, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * 3


def test_curl_of_rotation_is_two():
    assert torch.equal(curl_2d(rotation, points()), torch.full((500,), 2.0))
    assert mean_abs_curl(rotation, points().numpy()) == 2.0


def test_curl_of_gradient_is_zero():
    curl = curl_2d(gradient_field, points())
    assert curl.abs().max() < 1e-5 * points().abs().max() ** 2


def test_jacobian_and_divergence_of_linear_field():
    a = torch.tensor([[1.0, 2.0, 0.5], [-1.0, 3.0, 0.0], [0.25, 4.0, -2.0]])
    field = lambda x, cond: x @ a.T  # noqa: E731
    x = points(64, d=3)
    assert torch.allclose(jacobian(field, x), a.expand(64, 3, 3))
    assert torch.allclose(divergence_field(field, x), torch.full((64,), 2.0))


def test_nonlinear_jacobian_rows_are_gradients_of_outputs():
    x = points(20)
    jac = jacobian(gradient_field, x)
    px, py = x[:, 0], x[:, 1]
    expected = torch.stack(
        [torch.stack([2 * py - torch.sin(px), 2 * px], 1), torch.stack([2 * px, 2 * py], 1)], 1
    )
    assert torch.allclose(jac, expected, atol=1e-5)


def test_chunking_and_per_row_cond(monkeypatch):
    monkeypatch.setattr(fields_module, "_CHUNK_ROWS", 7)
    x = points(30)
    scale = torch.linspace(1, 3, 30)
    seen = []

    def scaled(x, cond):
        seen.append(cond)
        return cond[:, None] * x if isinstance(cond, torch.Tensor) else cond * x

    # A per-row cond is cut into blocks with the rows; a scalar cond reaches every block as is.
    assert torch.allclose(divergence_field(scaled, x, scale), 2 * scale)
    assert torch.allclose(divergence_field(scaled, x, 1.5), torch.full((30,), 3.0))
    assert seen[-1] == 1.5 and len(seen) == 10


def test_constant_field_and_cond_none():
    def constant(x, cond):
        assert cond is None
        return torch.ones_like(x)

    assert torch.equal(divergence_field(constant, points(5)), torch.zeros(5))
    assert torch.equal(jacobian(lambda x, c: x.detach() * 0 + 1, points(5)), torch.zeros(5, 2, 2))


def test_module_field_results_are_detached_and_params_untouched():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 2))
    field = lambda x, cond: net(x)  # noqa: E731
    x = points(50)
    div = divergence_field(field, x)
    jac = jacobian(field, x)
    assert not div.requires_grad and not jac.requires_grad
    assert torch.allclose(div, jac.diagonal(dim1=1, dim2=2).sum(1), atol=1e-6)
    assert all(p.grad is None for p in net.parameters())
    # Finite differences agree with autograd.
    eps = 1e-3
    e0 = torch.tensor([eps, 0.0])
    with torch.no_grad():
        fd = (net(x + e0) - net(x - e0)) / (2 * eps)
    assert torch.allclose(jac[:, :, 0], fd, atol=2e-3)


def test_errors():
    with pytest.raises(FluxMatchError, match="2-D"):
        curl_2d(lambda x, c: x, points(5, d=3))
    with pytest.raises(FluxMatchError, match="shaped like x"):
        jacobian(lambda x, c: x[:, :1], points(5))
    with pytest.raises(FluxMatchError, match=r"shape \(N, d\)"):
        divergence_field(rotation, torch.zeros(3))


def test_field_on_grid():
    X, Y, U, V = field_on_grid(rotation, 2.0, 5, center=(1.0, 0.0))
    assert X.shape == Y.shape == U.shape == V.shape == (5, 5)
    assert X[0, 0] == -1.0 and X[0, -1] == 3.0 and Y[0, 0] == -2.0 and Y[-1, 0] == 2.0
    assert np.array_equal(U, -Y) and np.array_equal(V, X)
    X, Y, _, _ = field_on_grid(rotation, (0, 1, -1, 0), 3)
    assert X[0].tolist() == [0.0, 0.5, 1.0] and Y[:, 0].tolist() == [-1.0, -0.5, 0.0]
    with pytest.raises(FluxMatchError, match="lim"):
        field_on_grid(rotation, -1.0, 5)


class LinearField(nn.Module):
    def __init__(self):
        super().__init__()
        self.map = nn.Linear(2, 2)

    def forward(self, x, c=None):
        return self.map(x)


def test_module_fields_get_inputs_in_their_dtype():
    torch.manual_seed(1)
    field = LinearField()
    x = points(10).double().numpy()
    expected = torch.full((10,), float(field.map.weight.detach().trace()))
    assert torch.allclose(divergence_field(field, x), expected)
    X, Y, U, V = field_on_grid(field, 1.0, 4)
    assert U.dtype == np.float32 and U.shape == (4, 4)
