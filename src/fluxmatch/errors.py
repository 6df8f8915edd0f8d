"""The one exception type fluxmatch raises for bad input.

Every check at the library's boundary (data, shapes, σ, checkpoints, fields) raises
:class:`FluxMatchError` with a message that names the problem, so that the CLI can print it
on one line and exit non-zero, and a Python user can catch one type.
"""

import math
import operator


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


def check_integer(value, name: str, minimum: int = 1) -> int:
    """Return ``value`` as an int, or raise naming ``name`` if it is not an integer ≥ ``minimum``
    (bools are refused; numpy integers are accepted)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise FluxMatchError(f"{name} must be an integer ≥ {minimum}, got {value!r}") from None
    if number < minimum:
        raise FluxMatchError(f"{name} must be an integer ≥ {minimum}, got {number}")
    return int(number)


def check_sigma(sigma) -> float:
    """Return σ as a float, or raise if it is not a positive finite number."""
    return check_positive(sigma, "σ")


class TrainingInterrupted(FluxMatchError):
    """Training stopped on a signal (SIGINT, SIGTERM) after writing a checkpoint at the current step.

    Attributes:
        step: the completed optimizer steps the checkpoint holds.
        run_dir: the run directory holding that checkpoint.
        signal_name: "SIGINT" or "SIGTERM".
        exit_code: the conventional exit status for the signal (130 for SIGINT, 143 for SIGTERM).
    """

    def __init__(self, step: int, run_dir, signal_name: str, exit_code: int) -> None:
        self.step, self.run_dir, self.signal_name, self.exit_code = int(step), str(run_dir), signal_name, int(exit_code)
        super().__init__(f"{signal_name} received: training stopped at step {self.step} with a checkpoint in {self.run_dir}")
