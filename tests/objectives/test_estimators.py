"""The estimators as named parts: the same objective as the keyword form, options on the part."""

import pytest
import torch

from fluxmatch.errors import FluxMatchError
from fluxmatch.fields import MLPField
from fluxmatch.objectives import FluxMatching, HorizonEstimator, PotentialEstimator


def _loss(objective):
    torch.manual_seed(3)
    return objective(MLPField(2, (8,)), torch.randn(32, 2)).loss


@pytest.mark.parametrize(
    "part, keywords",
    [
        (HorizonEstimator("gradient", dynamics="langevin", horizon=2.0), dict(estimator="gradient", dynamics="langevin", horizon=2.0)),
        (HorizonEstimator("product", divergence="hutchinson", horizon_sampler="uniform"), dict(estimator="product", divergence="hutchinson", horizon_sampler="uniform")),
        (PotentialEstimator(hidden=(16,), field_lr_scale=0.5), dict(estimator="potential", potential_hidden=(16,), field_lr_scale=0.5)),
    ],
)
def test_a_part_is_its_keywords(part, keywords):
    torch.manual_seed(0)
    a = FluxMatching(0.3, estimator=part, dim=2)
    torch.manual_seed(0)
    b = FluxMatching(0.3, dim=2, **keywords)
    assert a.config == b.config and torch.equal(_loss(a), _loss(b))
    assert a.estimator_options.kind == keywords["estimator"]


def test_bad_parts():
    with pytest.raises(FluxMatchError, match="finite-horizon estimator"):
        HorizonEstimator("potential")
    with pytest.raises(FluxMatchError, match="an estimator is a name"):
        FluxMatching(0.3, estimator=3, dim=2)
