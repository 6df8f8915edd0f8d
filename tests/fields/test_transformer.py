"""Transformer fields on sequences: shapes, conditioning, exact causality, EDM wrapping, config, clear errors."""

import pytest
import torch
from torch.autograd.functional import jacobian

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import FIELD_TYPES, EDMPreconditioned, TransformerField, build_field, call_field

T, D = 6, 2


def _small(**kwargs) -> TransformerField:
    torch.manual_seed(0)
    return TransformerField(T, D, **{"width": 16, "depth": 2, "heads": 2, **kwargs})


def _step_jacobian(f, x: torch.Tensor) -> torch.Tensor:
    """(T, T) largest |∂f[0, t, :]/∂x[0, s, :]| for the first row of x (B, T, D)."""
    jac = jacobian(f, x)  # (B, T, D, B, T, D)
    return jac[0, :, :, 0].abs().amax(dim=(1, 3))


def test_shapes_and_conditioning():
    x = torch.randn(3, T, D)
    for conditioning, c in ((None, None), ("sigma", 0.5), ("sigma", torch.full((3,), 0.5)), ("time", torch.rand(3))):
        f = _small(conditioning=conditioning)
        assert f(x, c).shape == x.shape and call_field(f, x, c).shape == x.shape
    f = _small(conditioning="sigma")
    assert not torch.allclose(f(x, 0.1), f(x, 2.0))  # the noise level reaches every token
    assert (f.seq_len, f.features, f.dim, f.causal, f.conditioning) == (T, D, T * D, True, "sigma")
    with pytest.raises(FluxMatchError, match="conditioned on sigma"):
        f(x)
    with pytest.raises(FluxMatchError, match="2 conditioning values"):
        f(x, torch.ones(2))


@pytest.mark.parametrize("sigma", [0.0, -0.5, float("nan"), float("inf")])
def test_sigma_conditioned_field_refuses_bad_noise_levels(sigma):
    with pytest.raises(FluxMatchError, match="positive finite noise levels"):
        _small(conditioning="sigma")(torch.randn(3, T, D), torch.tensor([0.5, sigma, 1.0]))


@pytest.mark.parametrize("shape", [(4, T * D), (4, T + 1, D), (4, T, D + 1), (4, 1, T, D)])
def test_a_wrong_input_shape_names_the_fields_steps_and_features(shape):
    with pytest.raises(FluxMatchError, match=rf"\(B, T={T}, D={D}\), got shape \({', '.join(map(str, shape))}\)"):
        _small()(torch.randn(*shape))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 10, "heads": 4}, "divisible by the number of heads"),
        ({"seq_len": 0}, "seq_len must be a positive integer"),
        ({"features": 2.5}, "features must be a positive integer"),
        ({"depth": 0}, "depth must be a positive integer"),
        ({"conditioning": "noise"}, "unknown conditioning"),
        ({"causal": "yes"}, "causal must be True or False"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(FluxMatchError, match=message):
        TransformerField(**{"seq_len": T, "features": D, **kwargs})


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_a_causal_field_depends_on_past_steps_only_exactly(dtype):
    f = _small(conditioning="time").to(dtype)
    x, t = torch.randn(2, T, D, dtype=dtype), torch.rand(2, dtype=dtype)
    jac = _step_jacobian(lambda y: f(y, t), x)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)  # [t, s] with s > t
    assert bool((jac[future] == 0).all())
    assert bool((jac[~future] > 1e-6).all())


def test_full_attention_gives_a_dense_jacobian():
    f = _small(causal=False).double()
    jac = _step_jacobian(f, torch.randn(2, T, D, dtype=torch.float64))
    assert bool((jac > 1e-8).all())


def test_the_edm_wrapped_causal_field_is_still_causal():
    field = EDMPreconditioned(_small(conditioning="sigma"), sigma_data=0.7).double()
    x, sigma = torch.randn(2, T, D, dtype=torch.float64), torch.tensor([0.3, 2.0], dtype=torch.float64)
    jac = _step_jacobian(lambda y: field(y, sigma), x)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    assert bool((jac[future] == 0).all()) and bool((jac[~future] > 1e-8).all())
    assert field(x, sigma).shape == x.shape


def test_config_round_trip():
    assert FIELD_TYPES["transformer"] is TransformerField
    f = _small(conditioning="sigma", causal=False, mlp_ratio=2)
    assert f.config == {"type": "transformer", "seq_len": T, "features": D, "width": 16, "depth": 2, "heads": 2, "causal": False, "conditioning": "sigma", "mlp_ratio": 2}
    g = build_field(f.config)
    g.load_state_dict(f.state_dict())
    x, sigma = torch.randn(4, T, D), torch.exp(torch.randn(4))
    assert torch.equal(f(x, sigma), g(x, sigma))
    edm = EDMPreconditioned(f, sigma_data=0.5)
    rebuilt = build_field(edm.config)
    rebuilt.load_state_dict(edm.state_dict())
    assert torch.equal(edm(x, sigma), rebuilt(x, sigma))


def test_training_step_reaches_every_parameter():
    f = _small(conditioning="sigma")
    f(torch.randn(4, T, D), 0.5).square().mean().backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in f.parameters())
