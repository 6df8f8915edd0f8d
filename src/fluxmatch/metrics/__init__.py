"""Evaluation metrics: distances between samples, image metrics (FD-digits, class coverage) and diagnostics of vector fields."""

from .diagnostics import ScoreFluxSplit, antisymmetric_jacobian_norm, residual_stats, score_flux_split
from .fields import curl_2d, divergence_field, field_on_grid, grid_points, jacobian, mean_abs_curl
from .images import class_coverage, digit_features, digits_classifier, fd_digits, frechet_distance, gaussian_frechet_distance, image_metrics
from .mixing import MixingCurve, autocorrelation_time, integrated_autocorrelation_time, mixing_curve, steps_to_reach
from .samples import W2_MAX_POINTS, energy_distance, mmd_rbf, sample_metrics, sliced_wasserstein2, wasserstein2

__all__ = [
    "W2_MAX_POINTS",
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
    "frechet_distance",
    "gaussian_frechet_distance",
    "digits_classifier",
    "digit_features",
    "fd_digits",
    "class_coverage",
    "image_metrics",
    "antisymmetric_jacobian_norm",
    "residual_stats",
    "score_flux_split",
    "ScoreFluxSplit",
    "MixingCurve",
    "mixing_curve",
    "steps_to_reach",
    "integrated_autocorrelation_time",
    "autocorrelation_time",
]
