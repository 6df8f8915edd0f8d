"""The one finiteness check that every metric runs on what the user hands it."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import FluxMatchError


def require_finite(values, name: str, hint: str = "", unit: str = "row") -> None:
    """Refuse NaN or inf before any metric is computed.

    Args:
        values: a torch tensor or numpy array (anything ``np.asarray`` takes), shape (N, ...):
            row n is ``values[n]``; a 0-d value counts as one row.
        name: the argument's name, used in the message.
        hint: appended to the message (e.g. what to do about a diverged sampler).
        unit: what a row is called in the message ("row", "entry", "image", ...).

    Raises:
        FluxMatchError: "``name`` has K non-finite row(s) of N (NaN or inf): metrics need finite
            samples".
    """
    if isinstance(values, torch.Tensor):
        t = values.detach()
        if t.numel() == 0 or not (t.is_floating_point() or t.is_complex()):
            return
        ok = torch.isfinite(t.reshape(1, -1) if t.ndim == 0 else t.reshape(t.shape[0], -1)).all(1)
        bad, n = int((~ok).sum()), int(ok.shape[0])
    else:
        a = np.asarray(values)
        if a.size == 0 or not np.issubdtype(a.dtype, np.inexact):
            return
        ok = np.isfinite(a.reshape(1, -1) if a.ndim == 0 else a.reshape(a.shape[0], -1)).all(1)
        bad, n = int((~ok).sum()), int(ok.shape[0])
    if bad:
        raise FluxMatchError(f"{name} has {bad} non-finite {unit}(s) of {n} (NaN or inf): metrics need finite samples{hint}")


__all__ = ["require_finite"]
