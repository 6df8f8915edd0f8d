"""Headless (Agg) plots saved as PNG: samples beside data, vector fields, curl, training curves,
image grids, mixing curves."""

from .fields import plot_curl, plot_field, plot_fields
from .images import plot_image_grid
from .mixing import plot_mixing_curves
from .samples import plot_loss_curve, plot_samples

__all__ = ["plot_samples", "plot_field", "plot_curl", "plot_fields", "plot_loss_curve", "plot_image_grid", "plot_mixing_curves"]
