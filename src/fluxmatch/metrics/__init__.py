"""Evaluation metrics: distances between samples and diagnostics of vector fields."""

from .fields import curl_2d, divergence_field, field_on_grid, grid_points, jacobian, mean_abs_curl
from .samples import energy_distance, mmd_rbf, sample_metrics, sliced_wasserstein2, wasserstein2

__all__ = [
    "wasserstein2",
    "sliced_wasserstein2",
    "mmd_rbf",
    "energy_distance",
    "sample_metrics",
    "jacobian",
    "divergence_field",
    "curl_2d",
    "mean_abs_curl",
    "field_on_grid",
    "grid_points",
]
