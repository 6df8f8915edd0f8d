"""Gaussian noise for samplers, drawn from a generator on any device.

A sampler on the GPU may be given a CPU ``torch.Generator`` (the pipeline seeds one per draw):
the noise is then drawn on the CPU and moved, so one seed gives the same noise whatever device
the field runs on.

    >>> g = torch.Generator().manual_seed(0)
    >>> standard_normal((2, 3), g).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import torch


def standard_normal(shape, generator: torch.Generator | None = None, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """(shape) N(0, I) noise on ``device``, drawn on the generator's own device and moved there."""
    device = torch.device("cpu") if device is None else torch.device(device)
    if generator is None or generator.device == device or (generator.device.type == device.type == "cuda" and device.index is None):
        return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=device)
    return torch.randn(tuple(shape), generator=generator, dtype=dtype, device=generator.device).to(device)
