"""Deterministic sampling of a flow ODE ``dx/dt = v(x, t)``: fixed-step Runge-Kutta or adaptive dopri5.

A flow-matching field v carries the prior at t = 0 to the data at t = 1; integrating from t0 = 0
to t1 = 1 draws samples, from 1 to 0 encodes data into the prior (``t1 < t0`` is allowed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import FluxMatchError
from ..fields import call_field

FIXED_STEP_METHODS = {"euler": 1, "midpoint": 2, "heun": 2}  # method → evaluations of v per step
METHODS = (*FIXED_STEP_METHODS, "dopri5")


@dataclass
class ODEResult:
    """The state at t1, ``samples`` (B, ...), the number of velocity evaluations, and, if recorded, the trajectory.

    ``trajectory`` is (T, B, ...) with the time of each frame in ``times`` (T,): every step of a
    fixed-step method (T = steps + 1), or, for dopri5, the dense solution at steps + 1 evenly
    spaced times (the solver still picks its own steps in between).
    """

    samples: torch.Tensor
    nfe: int
    trajectory: torch.Tensor | None = None
    times: torch.Tensor | None = None

    @property
    def x(self) -> torch.Tensor:
        """The state at t1 (the name the first releases used; the same tensor as ``samples``)."""
        return self.samples


def _check_finite(x: torch.Tensor, t: float) -> None:
    if not torch.isfinite(x).all():
        raise FluxMatchError(
            f"the ODE solution became non-finite at t = {t:.4g}: the velocity field blows up; try more steps or a smaller time span"
        )


@torch.no_grad()
def solve_ode(
    velocity,
    x_init: torch.Tensor,
    t0: float = 0.0,
    t1: float = 1.0,
    method: str = "euler",
    steps: int = 100,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    record: bool = False,
    progress: bool = False,
) -> ODEResult:
    """Integrate ``dx/dt = v(x, t)`` from ``x(t0) = x_init`` to t1.

    With h = (t1 − t0)/steps and t_k = t0 + k h, the fixed-step updates are

    * ``euler``    (order 1, 1 evaluation/step): x ← x + h v(x, t)
    * ``midpoint`` (order 2, 2 evaluations/step): x ← x + h v(x + (h/2) v(x, t), t + h/2)
    * ``heun``     (order 2, 2 evaluations/step): x̃ = x + h v(x, t); x ← x + (h/2) (v(x, t) + v(x̃, t + h))

    and ``dopri5`` is the adaptive Dormand-Prince 5(4) pair of ``torchdiffeq.odeint`` with
    tolerances ``rtol``/``atol`` (``steps`` then only sets the recorded frames).

    Args:
        velocity: callable ``velocity(x, t)`` with x (B, ...) and t a (B,) tensor, returning a
            tensor shaped like x (a time-conditioned field such as ``MLPField(d, conditioning="time")``
            works as is).
        x_init: (B, ...) initial state at t0 (floating; integer input is cast to the default dtype).
        t0, t1: start and end times (t1 < t0 integrates backwards).
        method: "euler", "midpoint", "heun" or "dopri5".
        steps: number of steps ≥ 1 for the fixed-step methods.
        rtol, atol: relative and absolute tolerances of dopri5.
        record: keep the trajectory (see :class:`ODEResult`).
        progress: show a tqdm progress bar (fixed-step methods).

    Returns:
        :class:`ODEResult` with ``nfe`` = steps × evaluations per step for fixed-step methods, and
        the counted evaluations for dopri5.

    Raises:
        FluxMatchError: unknown method, steps < 1, non-finite x_init or times, a velocity of the
            wrong shape, or a solution that becomes non-finite.
    """
    if method not in METHODS:
        raise FluxMatchError(f"unknown ODE method {method!r}: expected one of {METHODS}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise FluxMatchError(f"the number of ODE steps must be an integer ≥ 1, got {steps!r}")
    if not isinstance(x_init, torch.Tensor) or x_init.dim() < 1:
        raise FluxMatchError("x_init must be a tensor with a leading batch dimension (B, ...)")
    x = x_init.detach().clone()
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if not torch.isfinite(x).all():
        raise FluxMatchError("x_init contains NaN or infinite values")
    t0, t1 = float(t0), float(t1)
    if not (torch.isfinite(torch.tensor([t0, t1])).all()):
        raise FluxMatchError(f"the ODE times must be finite, got t0 = {t0}, t1 = {t1}")
    if method == "dopri5":
        if not (rtol > 0 and atol > 0):
            raise FluxMatchError(f"dopri5 tolerances must be positive, got rtol = {rtol}, atol = {atol}")
        return _solve_dopri5(velocity, x, t0, t1, steps, rtol, atol, record)
    return _solve_fixed(velocity, x, t0, t1, method, steps, record, progress)


def _solve_fixed(velocity, x, t0, t1, method, steps, record, progress) -> ODEResult:
    batch = x.shape[0]
    h = (t1 - t0) / steps

    def v(state: torch.Tensor, t: float) -> torch.Tensor:
        return call_field(velocity, state, state.new_full((batch,), t))

    frames = [x.clone()] if record else None
    iterator = range(steps)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc=f"ode ({method})", leave=False)
    for k in iterator:
        t = t0 + k * h
        if method == "euler":
            x = x + h * v(x, t)
        elif method == "midpoint":
            x = x + h * v(x + 0.5 * h * v(x, t), t + 0.5 * h)
        else:  # heun
            k1 = v(x, t)
            k2 = v(x + h * k1, t + h)
            x = x + 0.5 * h * (k1 + k2)
        _check_finite(x, t + h)
        if record:
            frames.append(x.clone())
    nfe = steps * FIXED_STEP_METHODS[method]
    if record:
        times = t0 + h * torch.arange(steps + 1, dtype=x.dtype, device=x.device)
        return ODEResult(x, nfe, torch.stack(frames), times)
    return ODEResult(x, nfe)


def _solve_dopri5(velocity, x, t0, t1, steps, rtol, atol, record) -> ODEResult:
    from torchdiffeq import odeint

    if t0 == t1:
        times = x.new_tensor([t0])
        return ODEResult(x, 0, x[None].clone() if record else None, times if record else None)
    batch = x.shape[0]
    nfe = 0

    def func(t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        nonlocal nfe
        nfe += 1
        out = call_field(velocity, state, t.to(state.dtype).expand(batch))
        _check_finite(out, float(t))  # a non-finite trial state would otherwise stall the step-size control
        return out

    n_frames = steps + 1 if record else 2
    times = torch.linspace(t0, t1, n_frames, dtype=x.dtype, device=x.device)
    try:
        # a first step of 1/64 of the span (torchdiffeq's own guess can probe far outside [t0, t1],
        # where a field may overflow), and steps that land on the output times instead of overshooting
        options = {"first_step": abs(t1 - t0) / 64, "step_t": times}
        solution = odeint(func, x, times, rtol=rtol, atol=atol, method="dopri5", options=options)
    except AssertionError as err:  # torchdiffeq's "underflow in dt" when the state blows up
        raise FluxMatchError(f"the ODE solution became non-finite or stiff (dopri5: {err}); check the velocity field") from None
    _check_finite(solution, t1)
    if record:
        return ODEResult(solution[-1], nfe, solution, times)
    return ODEResult(solution[-1], nfe)
