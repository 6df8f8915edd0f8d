"""Headless (Agg) plots saved as PNG: samples beside data, vector fields, curl, training curves,
image grids, mixing curves, trajectories (and an animated GIF of the springs), Jacobian patterns."""

from .fields import plot_curl, plot_field, plot_fields, plot_jacobian_patterns
from .images import plot_image_grid
from .mixing import plot_mixing_curves
from .samples import plot_loss_curve, plot_samples
from .trajectories import animate_springs, plot_trajectories, plot_w2_curves

__all__ = ["plot_samples", "plot_field", "plot_curl", "plot_fields", "plot_jacobian_patterns", "plot_loss_curve", "plot_image_grid", "plot_mixing_curves", "plot_trajectories", "plot_w2_curves", "animate_springs"]
