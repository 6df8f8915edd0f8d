"""Train, sample and evaluate whole runs: the library functions behind the ``fluxmatch`` CLI.

A run directory (see :mod:`fluxmatch.train.checkpoint`) gets, besides the checkpoint files,

- ``log.csv``: training curves;
- ``metrics.json``: sample metrics against held-out data with their floor, the EMA field's
  mean |curl| (2-D data), the training summary and the sampler settings;
- ``samples.npy`` (n, *event_shape), ``samples.png`` (samples beside held-out data),
  ``loss.png`` and, for 2-D data, ``field.png`` (streamlines and curl of the field).

Sampling starts from the training data's per-coordinate mean and std,
``x0 = mean + std · N(0, 1)``, and runs Langevin dynamics with the trained EMA field, seeded.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

import numpy as np
import torch

from .data import TOY_DATASETS, DataSource, load_data
from .errors import FluxMatchError, check_positive, check_sigma
from .fields import MLPField
from .metrics import mean_abs_curl, sample_metrics
from .objectives import DenoisingScoreMatching, FlowMatching, FluxMatching, WithDesign, design_terms
from .samplers import langevin, solve_ode
from .train import LoadedRun, Trainer, TrainConfig, load_run
from .train.checkpoint import atomic_write_bytes, atomic_write_json
from .annealed_runs import draw_annealed, image_evaluation, is_annealed_run, to_data_units, train_annealed_run

OBJECTIVE_NAMES = ("flux", "dsm", "flow")
DIVERGENCE_METHODS = ("auto", "exact", "hutchinson")
HORIZON_SAMPLERS = ("uniform", "exponential")
METRIC_KEYS = ("w2", "sliced_w2", "mmd", "energy")


# ---------------------------------------------------------------------------------------------
# argument checks


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise FluxMatchError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def parse_hidden(hidden) -> tuple[int, ...]:
    """Hidden widths from a tuple/list of ints or a string like "128,128"."""
    if isinstance(hidden, str):
        parts = [p.strip() for p in hidden.split(",") if p.strip()]
        try:
            hidden = [int(p) for p in parts]
        except ValueError:
            raise FluxMatchError(f"hidden widths must be comma-separated positive integers like 128,128, got {hidden!r}") from None
    try:
        widths = tuple(hidden)
    except TypeError:
        raise FluxMatchError(f"hidden widths must be a sequence of positive integers, got {hidden!r}") from None
    if not widths or any(isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1 for w in widths):
        raise FluxMatchError(f"hidden widths must be one or more positive integers, got {hidden!r}")
    return tuple(int(w) for w in widths)


def _data_spec(spec) -> str:
    """A toy name as is, a file path made absolute (so the run can be evaluated from anywhere)."""
    spec = os.fspath(spec)
    if spec in TOY_DATASETS or not Path(spec).is_file():
        return spec
    return str(Path(spec).resolve())


def make_objective(name: str, sigma: float, horizon_sampler: str = "exponential", divergence: str = "auto", dim: int | None = None, **options):
    """The objective called ``name`` ("flux" or "dsm") at noise level ``sigma``.

    ``horizon_sampler``, ``divergence``, ``dim`` (coordinates per data point, for Flux
    Matching's own networks) and ``options`` (e.g. ``estimator="product"``, ``horizon=4.0``)
    configure Flux Matching; DSM takes none of them (``dim`` is ignored).
    """
    sigma = check_sigma(sigma)
    if name not in OBJECTIVE_NAMES:
        raise FluxMatchError(f"unknown objective {name!r}: expected one of {', '.join(OBJECTIVE_NAMES)}")
    if name in ("dsm", "flow"):
        own = {k: options.pop(k) for k in ("path", "coupling") if name == "flow" and k in options}
        extra = dict(options)
        if horizon_sampler != "exponential":
            extra["horizon_sampler"] = horizon_sampler
        if divergence != "auto":
            extra["divergence"] = divergence
        if extra:
            raise FluxMatchError(f"the {name} objective does not take {', '.join(sorted(extra))} (flux takes horizon_sampler, divergence and its estimator options; flow takes path and coupling)")
        return FlowMatching(**own) if name == "flow" else DenoisingScoreMatching(sigma)
    if horizon_sampler not in HORIZON_SAMPLERS:
        raise FluxMatchError(f"unknown horizon sampler {horizon_sampler!r}: expected one of {', '.join(HORIZON_SAMPLERS)}")
    if divergence not in DIVERGENCE_METHODS:
        raise FluxMatchError(f"unknown divergence method {divergence!r}: expected one of {', '.join(DIVERGENCE_METHODS)}")
    try:
        return FluxMatching(sigma=sigma, horizon_sampler=horizon_sampler, divergence=divergence, dim=dim, **options)
    except TypeError as err:
        raise FluxMatchError(f"bad flux objective option: {err}") from None


# ---------------------------------------------------------------------------------------------
# sampling and evaluation


def _as_run(run) -> LoadedRun:
    return run if isinstance(run, LoadedRun) else load_run(run)


def _draw(run: LoadedRun, n: int, steps, step_size, seed: int, progress: bool = False, ode_method: str | None = None) -> np.ndarray:
    """(n, *event_shape) samples of the run's EMA field (may contain non-finite rows).

    Stationary fields (flux, DSM) by Langevin dynamics from the data's mean ± std; flow-matching
    velocities by their ODE from N(0, I) at t = 0 to t = 1 (``steps`` then counts ODE steps).
    """
    n = _positive_int(n, "the number of samples")
    sampler = run.config.get("sampler") or {}
    shape = run.event_shape
    d = math.prod(shape)
    generator = torch.Generator().manual_seed(int(seed))
    if is_flow_run(run):
        ode = {**DEFAULT_ODE, **sampler.get("ode", {}), **({"method": ode_method} if ode_method else {})}
        ode_steps = _positive_int(ode["steps"] if steps is None else steps, "the number of ODE steps")
        x0 = torch.randn((n, *shape), generator=generator)
        return solve_ode(run.field, x0, 0.0, 1.0, ode["method"], ode_steps).x.numpy()
    steps = _positive_int(sampler.get("n_steps", 2000) if steps is None else steps, "the number of sampler steps", minimum=0)
    step_size = check_positive(sampler.get("step_size", 0.005) if step_size is None else step_size, "the sampler step size")
    data = run.config.get("data") or {}
    mean = torch.as_tensor(data.get("mean", [0.0] * d), dtype=torch.float32)
    std = torch.as_tensor(data.get("std", [1.0] * d), dtype=torch.float32)
    if mean.numel() != d or std.numel() != d:
        raise FluxMatchError(f"{run.run_dir / 'config.json'}: data mean/std have {mean.numel()}/{std.numel()} entries, expected {d}")
    x0 = (mean + std * torch.randn((n, d), generator=generator)).reshape(n, *shape)
    result = langevin(run.field, x0, step_size, steps, c=run.sigma, generator=generator, progress=progress)
    return result.samples.numpy()


DEFAULT_ODE = {"method": "heun", "steps": 50}  # 100 field evaluations


def is_flow_run(run: LoadedRun) -> bool:
    """Whether the run trained a flow-matching velocity (sampled by its ODE, not by Langevin)."""
    return run.config["objective"].get("name") == "flow"


def _check_finite(samples: np.ndarray, where: str) -> None:
    bad = int((~np.isfinite(samples.reshape(samples.shape[0], -1)).all(1)).sum())
    if bad:
        raise FluxMatchError(f"{bad} of {samples.shape[0]} samples are NaN or inf: the Langevin sampler diverged ({where}); try a smaller step size")


def _split_pair(rows: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint halves of an evaluation sample: data and the reference for the floor."""
    half = rows.shape[0] // 2
    if half < 2:
        raise FluxMatchError(f"{name} has only {rows.shape[0]} evaluation row(s): at least 4 are needed for metrics and their floor")
    return rows[:half], rows[half : 2 * half]


def _evaluation_rows(spec: str, run_config: dict, n: int, seed: int) -> torch.Tensor:
    """Up to 2n evaluation points: halves become the data and the floor's reference.

    The run's own data (or any toy set): points training never saw (fresh toy draws, or the
    file's held-out split rebuilt with the training seed). Another file: random rows of it.
    """
    train_spec = (run_config.get("data") or {}).get("spec")
    train_seed = int((run_config.get("train") or {}).get("seed", 0))
    if spec in TOY_DATASETS or spec == train_spec:
        rows = DataSource.from_spec(spec, seed=train_seed).holdout(2 * n, seed)
    else:
        rows = load_data(spec, n=2 * n, seed=seed)
    return rows


def _check_event_shape(run: LoadedRun, rows: torch.Tensor, spec: str) -> None:
    if tuple(rows.shape[1:]) != run.event_shape:
        raise FluxMatchError(
            f"data {spec} has points of shape {tuple(rows.shape[1:])}, but the run {run.run_dir} was trained on points of shape {run.event_shape}"
        )


def _curl(run: LoadedRun, points: torch.Tensor) -> float | None:
    if math.prod(run.event_shape) != 2 or is_flow_run(run):
        return None
    return mean_abs_curl(run.field, points.reshape(points.shape[0], 2), cond=run.sigma)


def sample_run(
    run,
    n: int = 2000,
    steps: int | None = None,
    step_size: float | None = None,
    seed: int = 0,
    out=None,
    progress: bool = False,
    ode_method: str | None = None,
    sampler: str | None = None,
    guidance: float | None = None,
    label: int | None = None,
) -> np.ndarray:
    """Draw samples from a trained run: Langevin dynamics, the ODE for a flow-matching run, or
    a noise-annealed sampler for a σ-conditioned (image) run.

    A noise-annealed run is sampled down EDM's noise schedule (``steps`` noise levels; ``sampler``
    "heun", "euler", "dopri5", "sde" or "pc"; class-conditional runs take ``guidance`` and
    ``label``) and its samples come back in the data's own units (digits: 0..16).

    Args:
        run: run directory (or a :class:`~fluxmatch.train.LoadedRun`).
        n: number of samples.
        steps, step_size: Langevin steps and step size ε (for a flow run: ODE steps); default to
            config.json's sampler.
        ode_method: for a flow run, the ODE method ("euler", "midpoint", "heun", "dopri5")
            instead of the run's.
        seed: seeds the initial points and the noise.
        out: if given, save the samples there as ``.npy``.
        progress: show a progress bar.

    Returns:
        (n, *event_shape) float32 array.

    Raises FluxMatchError for a bad run directory, bad settings, or a diverged sampler.
    """
    run = _as_run(run)
    if is_annealed_run(run):
        samples, _ = draw_annealed(run, n, seed, method=sampler, steps=steps, guidance=guidance, label=label, progress=progress)
        _check_finite(samples, f"run {run.run_dir}")
        samples = to_data_units(run, samples)
    else:
        if sampler is not None or guidance is not None or label is not None:
            raise FluxMatchError("--sampler, --guidance and --label apply to noise-annealed (image) runs; this run samples by Langevin dynamics or its ODE")
        samples = _draw(run, n, steps, step_size, seed, progress, ode_method)
        _check_finite(samples, f"run {run.run_dir}")
    if out is not None:
        _save_npy(out, samples)
    return samples


def evaluate_run(run, data=None, n: int = 2000, seed: int = 0, steps: int | None = None, step_size: float | None = None) -> dict:
    """Sample a trained run and compare the samples with data it was not trained on.

    Args:
        run: run directory (or a :class:`~fluxmatch.train.LoadedRun`).
        data: toy name or file (default: the run's own data spec). For the run's own data the
            comparison uses held-out points; another file is subsampled.
        n: number of samples and of evaluation data points.
        seed: seeds sampling and the evaluation subsets.
        steps, step_size: Langevin settings (default: config.json's sampler section).

    Returns:
        ``sample_metrics`` keys (w2, sliced_w2, mmd, energy and their floor_* against a second
        independent data sample) plus ``mean_abs_curl`` on the data (None unless 2-D) and ``n``.
    """
    run = _as_run(run)
    n = _positive_int(n, "the number of evaluation samples")
    if is_annealed_run(run):
        return _evaluate_annealed(run, data, n, seed, steps)
    spec = _data_spec(data) if data is not None else (run.config.get("data") or {}).get("spec")
    if spec is None:
        raise FluxMatchError(f"{run.run_dir / 'config.json'} names no data: pass the data to evaluate on")
    rows = _evaluation_rows(spec, run.config, n, seed)
    _check_event_shape(run, rows, spec)
    held, reference = _split_pair(rows, str(spec))
    samples = _draw(run, n, steps, step_size, seed)
    _check_finite(samples, f"run {run.run_dir}")
    metrics = sample_metrics(samples, held, reference=reference, seed=seed)
    return {**metrics, "mean_abs_curl": _curl(run, held), "n": int(samples.shape[0]), "n_data": int(held.shape[0])}


def _evaluate_annealed(run: LoadedRun, data, n: int, seed: int, steps: int | None, nll_n: int = 200) -> dict:
    spec = (run.config.get("data") or {}).get("spec")
    if data is not None and _data_spec(data) != spec:
        raise FluxMatchError(f"a noise-annealed run is evaluated on its own data ({spec}), not {data}")
    source = DataSource.from_spec(spec, seed=int((run.config.get("train") or {}).get("seed", 0)))
    samples, nfe = draw_annealed(run, n, seed, steps=steps)
    _check_finite(samples, f"run {run.run_dir}")
    return {**image_evaluation(run, source, samples, seed, nll_n), "n": int(samples.shape[0]), "nfe": nfe}


# ---------------------------------------------------------------------------------------------
# training


def _save_npy(path, array: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _loss_keys(log_path: Path) -> list[str]:
    """Columns worth plotting: the loss, each objective term that is not a copy of it, the grad norm."""
    with log_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return ["loss"]
    fixed = {"step", "loss", "grad_norm", "lr", "step_ms"}
    terms = [k for k in rows[0] if k not in fixed and any(r.get(k) not in ("", None) for r in rows)]
    terms = [k for k in terms if any(r.get(k) != r.get("loss") for r in rows)]
    return ["loss", *terms, "grad_norm"]


def train_run(
    data="ring",
    objective: str = "flux",
    steps: int | None = None,
    batch_size: int | None = None,
    sigma: float = 0.2236,
    seed: int = 0,
    out="runs/demo",
    hidden=(128, 128),
    lr: float = 1e-3,
    horizon_sampler: str = "exponential",
    divergence: str = "auto",
    grad_clip: float | None = 1.0,
    resume: bool = False,
    progress: bool = True,
    n_eval: int | None = None,
    sample_steps: int | None = None,
    step_size: float = 0.005,
    image: dict | None = None,
    design: dict | None = None,
    device: str = "cpu",
    **objective_options,
) -> dict:
    """Train a field on data, sample it, evaluate it and write a complete run directory.

    Points (toy sets, files): an MLP field at fixed σ, sampled by Langevin dynamics (flow
    matching: by its ODE). Images (``data="digits"``): an EDM-preconditioned UNet trained over a
    continuum of σ, sampled down a noise schedule (see :mod:`fluxmatch.annealed_runs`).

    Args:
        data: toy name ("ring", "8gaussians", "moons", "checkerboard", "spirals"), "digits",
            or a .npy/.npz/.csv file.
        objective: "flux" (Flux Matching), "dsm" (denoising score matching) or "flow".
        steps, batch_size, lr, seed: training settings (:class:`~fluxmatch.train.TrainConfig`;
            cosine schedule, EMA 0.999, grad clip 1; logs every min(50, steps/20) steps).
            Defaults: 2000 steps of 512 points; images 6000 steps of 128.
        image: options of image runs (:func:`~fluxmatch.annealed_runs.train_annealed_run`):
            ``preset``, ``class_conditional``, ``sampler`` (dict), ``nll_n``.
        device: where training runs ("cpu", "cuda", "auto"); sampling and evaluation run on CPU.
        design: weights of design terms added to the flux or DSM loss, e.g. ``{"mixing": 0.01}``
            or ``{"rotation": 0.05}`` (see :func:`~fluxmatch.objectives.design_terms`; the
            mixing term's step is 10 sampler steps).
        sigma: noise level σ of the objective (data units).
        out: run directory.
        hidden: MLP hidden widths, e.g. (128, 128) or "128,128".
        grad_clip: largest gradient norm per parameter group (None: no clipping).
        horizon_sampler, divergence, objective_options: Flux Matching settings
            (see :class:`~fluxmatch.objectives.FluxMatching`).
        resume: continue an interrupted run in ``out`` up to ``steps``.
        progress: show progress bars.
        n_eval: number of samples drawn for evaluation (and of held-out points).
        sample_steps, step_size: Langevin settings for evaluation, also stored as the run's
            sampling defaults.

    Returns:
        The content of metrics.json: w2, sliced_w2, mmd, energy, floor_* (a second held-out
        sample against the first), mean_abs_curl (None unless 2-D), "train" (the trainer's
        summary), "sampler", and "files" (names written in ``out``).
    """
    seed = _positive_int(seed, "seed", minimum=0)
    out = Path(out)
    spec = _data_spec(data)
    source = DataSource.from_spec(spec, seed=seed)
    if len(source.dim) == 3:
        return _train_images(source, objective, steps, batch_size, seed, out, lr, grad_clip, resume, progress, n_eval, sample_steps, image, objective_options, design, device)
    if image:
        raise FluxMatchError(f"image options apply to image data (N, C, H, W); {spec} has points of shape {tuple(source.dim)}")
    sigma = check_sigma(sigma)
    hidden = parse_hidden(hidden)
    steps = _positive_int(2000 if steps is None else steps, "steps")
    batch_size = _positive_int(512 if batch_size is None else batch_size, "batch size")
    n_eval = _positive_int(2000 if n_eval is None else n_eval, "the number of evaluation samples", minimum=2)
    sample_steps = _positive_int(2000 if sample_steps is None else sample_steps, "the number of sampler steps", minimum=0)
    step_size = check_positive(step_size, "the sampler step size")
    # seeded before any network is built, the field first: the same seed gives every objective the same initial field
    torch.manual_seed(seed)
    field = MLPField(math.prod(source.dim), hidden, conditioning="time" if objective == "flow" else None)
    objective_module = make_objective(objective, sigma, horizon_sampler, divergence, dim=math.prod(source.dim), **objective_options)
    if design and any(design.values()):
        if objective == "flow":
            raise FluxMatchError("design terms (--mixing, --rotation, ...) act on flux or dsm fields, not on flow matching")
        objective_module = WithDesign(objective_module, design_terms(design, mixing_step_size=10 * step_size))
    config = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        grad_clip=grad_clip,
        progress=progress,
        log_every=min(50, max(1, steps // 20)),
        device=device,
    )
    sampler = {"step_size": step_size, "n_steps": sample_steps, "n": n_eval}
    if objective == "flow":
        sampler = {"n": n_eval, "ode": dict(DEFAULT_ODE)}
    summary = Trainer(field, objective_module, source, config, out, sampler=sampler).fit(resume=resume)

    run = load_run(out)
    held, reference = _split_pair(source.holdout(2 * n_eval, seed), str(spec))
    samples = _draw(run, n_eval, None if objective == "flow" else sample_steps, step_size, seed, progress)
    files = ["config.json", "model.safetensors", "trainer.safetensors", "trainer.json", "log.csv"]
    _save_npy(out / "samples.npy", samples)
    from .viz import plot_fields, plot_loss_curve, plot_samples

    title = f"{objective} on {source.name if source.is_toy else Path(source.name).name}, σ = {sigma:g}, {summary['steps']} steps"
    plot_samples(out / "samples.png", {objective: samples}, data=held, title=title)
    plot_loss_curve(out / "loss.png", out / "log.csv", _loss_keys(out / "log.csv"))
    files += ["samples.npy", "samples.png", "loss.png"]
    if math.prod(source.dim) == 2 and objective != "flow":
        plot_fields(out / "field.png", {objective: run.field}, data=held.reshape(held.shape[0], 2), cond=run.sigma)
        files.append("field.png")
    _check_finite(samples, f"the model is saved in {out}")

    metrics = sample_metrics(samples, held, reference=reference, seed=seed)
    result = {
        **metrics,
        "mean_abs_curl": _curl(run, held),
        "train": summary,
        "sampler": {**sampler, "seed": seed, "n_data": int(held.shape[0])},
        "data": spec,
        "objective": objective,
        "files": [*files, "metrics.json"],
    }
    atomic_write_json(out / "metrics.json", result)
    return result


def _train_images(source, objective, steps, batch_size, seed, out, lr, grad_clip, resume, progress, n_eval, sample_steps, image, objective_options, design=None, device="cpu") -> dict:
    """An image run: the noise-annealed pipeline with the defaults of :func:`train_run`."""
    if objective not in ("flux", "dsm"):
        raise FluxMatchError(f"image data trains the noise-annealed flux or dsm objective, not {objective!r}")
    options = dict(image or {})
    if sample_steps is not None:
        options["sampler"] = {**options.get("sampler", {}), "steps": _positive_int(sample_steps, "the number of noise levels")}
    if design and any(design.values()):
        options["design"] = design
    options["device"] = device
    return train_annealed_run(
        source,
        objective,
        steps=_positive_int(6000 if steps is None else steps, "steps"),
        batch_size=_positive_int(128 if batch_size is None else batch_size, "batch size"),
        seed=seed,
        out=out,
        lr=lr,
        grad_clip=grad_clip,
        resume=resume,
        progress=progress,
        n_eval=_positive_int(1000 if n_eval is None else n_eval, "the number of evaluation samples", minimum=2),
        **options,
        **objective_options,
    )
