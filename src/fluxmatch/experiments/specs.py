"""The run spec every study trains: fixed-σ flux or DSM on points, with optional design terms."""

from __future__ import annotations

from ..config import DataSpec, EvalSpec, ObjectiveSpec, RunSpec, SamplerSpec, TrainSpec


def study_spec(data: str, objective: str, steps: int, seed: int, n: int, design: dict | None = None, sampler: SamplerSpec | None = None) -> RunSpec:
    """A fixed-σ run of ``objective`` on ``data`` (σ 0.2236, MLP 128-128, B 512), evaluated on
    ``n`` samples; ``sampler`` defaults to 2000 Langevin steps of ε = 0.005."""
    return RunSpec(
        data=DataSpec(data),
        objective=ObjectiveSpec(name=objective, noise="fixed", design=dict(design or {})),
        sampler=sampler or SamplerSpec(),
        train=TrainSpec(steps=steps, seed=seed),
        evaluation=EvalSpec(n=n),
    )
