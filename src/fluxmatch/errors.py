"""The one exception type fluxmatch raises for bad input.

Every check at the library's boundary (data, shapes, σ, checkpoints, fields) raises
:class:`FluxMatchError` with a message that names the problem, so that the CLI can print it
on one line and exit non-zero, and a Python user can catch one type.
"""

import math


class FluxMatchError(ValueError):
    """Bad input to fluxmatch: the message says what is wrong and, where it can, how to fix it."""


def check_positive(value, name: str) -> float:
    """Return ``value`` as a float, or raise naming ``name`` if it is not a positive finite number."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FluxMatchError(f"{name} must be a positive finite number, got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise FluxMatchError(f"{name} must be a positive finite number, got {value!r}")
    return number


def check_sigma(sigma) -> float:
    """Return σ as a float, or raise if it is not a positive finite number."""
    return check_positive(sigma, "σ")
