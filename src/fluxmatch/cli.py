"""The ``fluxmatch`` command line: thin shells that build a run spec and call the library.

``train`` turns its flags (over a ``--preset`` or a ``--config`` spec file) into a
:class:`~fluxmatch.config.RunSpec` and calls :func:`fluxmatch.run.train_run`; ``sample`` and
``evaluate`` call :mod:`fluxmatch.run`; ``compare`` and ``experiment`` run the studies.

Bad input (a :class:`~fluxmatch.errors.FluxMatchError`, a missing or unwritable path, or a bad
option) ends the program with one line ``fluxmatch: error: <message>`` on stderr and exit status
2. SIGINT or SIGTERM during training writes a checkpoint and exits with 130 or 143, saying how to
resume. Anything else is a bug: one line ``fluxmatch: internal error: ...`` and exit status 1
(``FLUXMATCH_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import config as cfg
from .errors import FluxMatchError, TrainingInterrupted

PROG = "fluxmatch"
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1
DEFAULT_RUN = "runs/ring-flux"
ALL_SAMPLERS = ("langevin", "heun", "euler", "midpoint", "dopri5", "sde", "pc")
class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str):
        _fail(message)


def _fail(message: str):
    text = " ".join(str(message).split()) or "unknown error"
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for every rank
        print(f"{PROG}: error: {text}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT)


def _clip(text: str) -> float | None:
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'none', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number or 'none', got {text!r}")
    return value


def _int_list(example: str):
    """An argparse type for comma-separated positive integers, e.g. "128,128"."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(p) for p in text.split(","))
        except ValueError:
            values = ()
        if not values or min(values) < 1:
            raise argparse.ArgumentTypeError(f"expected comma-separated positive integers like {example}, got {text!r}")
        return values

    return parse


_hidden = _int_list("128,128")
_budgets = _int_list("5,10,20")



def _train_parser(commands) -> argparse.ArgumentParser:
    """``train``: every option defaults to "unset" (argparse.SUPPRESS), so that only the flags a
    user gives reach the spec; the spec's own defaults (by data kind) fill the rest."""
    train = commands.add_parser(
        "train", help="train a field and write a run directory", argument_default=argparse.SUPPRESS,
        description="Train a field, sample it and evaluate the samples. Every option has a default (the ring demo); "
        "the flags build a run spec, written whole to the run's config.json (replay it with --config RUN/config.json).",
    )
    add = train.add_argument
    add("--data", help="toy set (ring, 8gaussians, moons, checkerboard, spirals, triangle), digits (8×8 images), cifar10:PATH or celeba64:PATH (your copy; nothing is downloaded), or a .npy/.npz/.csv file (default: ring)")
    add("--data-kind", choices=("points", "images", "trajectories"), help="kind of data (default: the kind the data spec names: images for digits/cifar10/celeba64, trajectories for springs and rank-3 .npy/.npz files, points otherwise)")
    add("--objective", choices=cfg.OBJECTIVES, help="training objective (default: flux)")
    add("--noise", choices=cfg.NOISES, help="noise schedule of flux and dsm: one fixed σ, or annealed over a continuum of σ (default: fixed for points, annealed for images)")
    add("--sigma", type=float, help="fixed σ > 0 in data units (default: 0.2236)")
    add("--sigma-distribution", choices=cfg.SIGMA_DISTRIBUTIONS, help="annealed σ distribution (default: edm, log-normal)")
    add("--estimator", choices=cfg.ESTIMATORS, help="flux gradient estimator (default: split for noise-annealed MLP and UNet fields, else potential)")
    add("--dynamics", choices=cfg.DYNAMICS, help="reference kernel of the product/gradient estimators (default: component)")
    add("--horizon-sampler", choices=cfg.HORIZON_SAMPLERS, help="horizon sampler of the product/gradient estimators (default: exponential)")
    add("--divergence", choices=cfg.DIVERGENCES, help="divergence estimator of the product/gradient estimators (default: auto)")
    add("--path", choices=cfg.FLOW_PATHS, help="flow-matching probability path (default: ot)")
    add("--coupling", choices=cfg.FLOW_COUPLINGS, help="flow-matching noise-data coupling (default: independent)")
    add("--steps", type=int, help="optimizer steps (default: 2000; images 6000)")
    add("--batch-size", type=int, help="batch size (default: 512; images 128)")
    add("--seed", type=int, help="random seed (default: 0)")
    add("--hidden", type=_hidden, help="MLP hidden widths (default: 128,128)")
    add("--lr", type=float, help="peak learning rate (default: 1e-3)")
    add("--grad-clip", type=_clip, help="largest gradient norm per parameter group, or 'none' (default: 1.0)")
    add("--device", help="where training runs: cpu, cuda, cuda:N or auto (default: cpu)")
    add("--eval-samples", type=int, help="samples drawn for evaluation (default: 2000; images 1000)")
    add("--sample-steps", type=int, help="sampler steps: Langevin steps (2000), noise levels (18) or flow ODE steps (50)")
    add("--step-size", type=float, help="Langevin step size ε of fixed-σ runs (default: 0.005)")
    add("--sampler", choices=ALL_SAMPLERS, help="the run's sampler: langevin (fixed σ); heun, euler, dopri5, sde, pc (noise-annealed); heun, euler, midpoint, dopri5 (flow) (default: langevin / heun / heun)")
    add("--out", help="run directory (default: runs/<data>-<objective>)")
    add("--resume", action="store_true", default=False, help="continue an interrupted run in --out up to --steps (its own training settings; --steps, --device, --checkpoint-every and the sampling and evaluation options may change)")
    add("--overwrite", action="store_true", default=False, help="replace the run in --out: the new run is trained beside it and swapped in only when complete")
    add("--checkpoint-every", type=int, help="write a resumable checkpoint every N steps (default: 500; SIGINT/SIGTERM also write one)")
    add("--snapshot-every", type=int, help="keep the EMA weights every N steps in <out>/snapshots/ (for measurements through training; default: never)")
    add("--no-progress", action="store_true", default=False, help="hide progress bars")
    _scale_options(train)
    add("--preset", choices=tuple(cfg.PRESETS), help="start from a named spec: " + "; ".join(f"{k}: {v}" for k, v in cfg.PRESET_NOTES.items()))
    add("--config", help="start from a spec file (JSON or YAML), or a run's config.json to train the same run again; flags given on the command line win")
    add("--dry-run", action="store_true", default=False, help="print the resolved run spec as JSON and exit")
    design = train.add_argument_group("design terms (flux or dsm; weights added to the loss)")
    design.add_argument("--mixing", type=float, metavar="WEIGHT", help="fast-mixing term: Sinkhorn divergence after one Langevin step (10 sampler steps long) from perturbed points, relative to before (reference weight 0.01)")
    design.add_argument("--rotation", type=float, metavar="WEIGHT", help="reward for counter-clockwise tangential flow about the origin (2-D)")
    design.add_argument("--curl", type=float, metavar="WEIGHT", help="squared distance of the field's curl to 1 (2-D)")
    design.add_argument("--skew", type=float, metavar="WEIGHT", help="reward for the antisymmetric part of the field's Jacobian")
    design.add_argument("--sparsity", type=float, metavar="WEIGHT", help="L1 penalty on the off-diagonal Jacobian (interpretable dependencies)")
    _structured_options(train)
    image = train.add_argument_group("image runs (--data digits, cifar10:PATH, celeba64:PATH)")
    image.add_argument("--unet", help="UNet size preset: digits, cifar10, celeba64 (default: digits)")
    image.add_argument("--class-conditional", action="store_true", help="condition the field on the labels (classifier-free guidance; 10%% label dropout)")
    image.add_argument("--guidance", type=float, help="classifier-free guidance scale stored as the run's default (default: 1)")
    image.add_argument("--nll-samples", type=int, help="held-out images whose NLL (bits/dim) is measured; 0 skips it (default: 200)")
    return train


def _scale_options(train: argparse.ArgumentParser) -> None:
    group = train.add_argument_group("training at scale (GPUs; several processes with torchrun --nproc_per_node N -m fluxmatch train ...)")
    add = group.add_argument
    add("--lr-schedule", choices=cfg.LR_SCHEDULES, help="cosine (2%% warm-up, decay to 10%%), constant, or ramp (EDM's: linear over --lr-rampup images, then constant) (default: cosine)")
    add("--lr-rampup", type=int, metavar="IMAGES", help="length of the ramp schedule in training images (default: EDM's 10000000)")
    add("--ema-decay", type=float, help="asymptotic decay of the weight EMA sampling uses (default: 0.999)")
    add("--ema-halflife", type=float, metavar="IMAGES", help="EDM's EMA instead of --ema-decay: its half-life in training images (EDM: 500000)")
    add("--ema-rampup", type=float, metavar="RATIO", help="ramp the EMA half-life up as RATIO × images seen (EDM: 0.05)")
    add("--precision", choices=cfg.PRECISIONS, help="autocast precision of the training step: fp32, bf16 (the paper's) or fp16 with a gradient scaler (default: fp32)")
    add("--compile", action=argparse.BooleanOptionalAction, help="compile the field with torch.compile (default: off)")
    add("--workers", type=int, help="DataLoader workers prefetching batches (default: 0, batches drawn in the training process)")
    add("--log", choices=cfg.LOGS, help="csv (log.csv), or tensorboard: log.csv and TensorBoard events in <out>/tensorboard/ (default: csv)")
    add("--augment", choices=cfg.AUGMENTATIONS, help="image augmentation: hflip mirrors each training image with probability 1/2 (cifar10, celeba64)")


def _structured_options(train: argparse.ArgumentParser) -> None:
    group = train.add_argument_group("structured fields (trajectories: --data springs or an (N, T, D) .npy/.npz; DAGs on points)")
    add = group.add_argument
    add("--field", choices=cfg.FIELD_FAMILIES, help="field family (default: mlp for points, unet for images, transformer for trajectories)")
    add("--causal", action=argparse.BooleanOptionalAction, help="transformer: step t attends only to steps ≤ t (default), or with --no-causal to every step")
    add("--width", type=int, help="transformer width (default: 64)")
    add("--depth", type=int, help="transformer blocks (default: 2)")
    add("--heads", type=int, help="transformer attention heads (default: 4)")
    add("--graph", help="DAG field: edges j>i (0-based variables), quoted, e.g. '0>1,1>2': output i sees x_j and itself (required with --field dag)")


def _simulate_parser(commands) -> None:
    simulate = commands.add_parser(
        "simulate", help="simulate a data set (coupled springs into .npz, a cell lineage into .h5ad)",
        description="springs: N trajectories of two unit masses on coupled nonlinear springs "
        "(dv_i = -k_wall q_i - k_couple (q_i - q_j) - damping v_i - cubic q_i^3, RK4) written to FILE.npz: array x (N, T, 4) "
        "in raw units, order q1, v1, q2, v2, and the parameters; train on it with --data FILE.npz. "
        "cells: a branching differentiation (a progenitor splitting into --n-fates fates) with per-gene transcription switches, "
        "splicing kinetics, optional gene-gene regulation and Poisson (or negative-binomial) counts, written to FILE.h5ad with the truth "
        "(var true_alpha/true_beta/true_gamma, obs true_t, layers true_velocity), clusters, transitions and a 2-D embedding; "
        "estimate velocities with fluxmatch velocity --data FILE.h5ad.",
    )
    simulate.add_argument("system", choices=("springs", "cells"), help="what to simulate")
    simulate.add_argument("--n", type=int, default=None, help="springs: trajectories (default: 2000)")
    simulate.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    simulate.add_argument("--out", required=True, help="output file: .npz for springs, .h5ad for cells (an existing file needs --overwrite)")
    simulate.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    for name, default, what in SPRING_OPTIONS:
        simulate.add_argument("--" + name.replace("_", "-"), type=int if name == "steps" else float, default=None, help=f"springs: {what} (default: {default})")
    for name, kind, default, what in CELL_OPTIONS:
        simulate.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=f"cells: {what} (default: {default})")


#: The cell simulator's parameters on the command line: (LineageParams field, type, default, help).
CELL_OPTIONS = (
    ("n_cells", int, 2000, "cells"),
    ("n_genes", int, 50, "genes"),
    ("n_fates", int, 2, "fates the progenitors split into (1: a linear lineage)"),
    ("regulation", int, 0, "regulators per gene (a sparse signed gene-gene network)"),
    ("dispersion", float, 0.0, "negative-binomial over-dispersion of the counts (0: Poisson)"),
    ("capture", float, 3.0, "mean counts per molecule of abundance"),
)


#: The springs' parameters on the command line: (SpringParams field, default, help).
SPRING_OPTIONS = (
    ("k_wall", 1.0, "spring constant to the walls"),
    ("k_couple", 0.7, "coupling spring constant"),
    ("damping", 0.08, "linear damping"),
    ("cubic", 0.08, "cubic stiffness κ"),
    ("dt", 0.1, "RK4 time step"),
    ("steps", 50, "states per trajectory, the initial one included"),
    ("q_std", 3.0, "std of the initial positions"),
    ("v_std", 1.5, "std of the initial velocities"),
)


def _sampler_options(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--steps", type=int, default=None, help="sampler steps: Langevin steps, noise levels or ODE steps (default: the run's)")
    parser.add_argument("--step-size", type=float, default=None, help="Langevin step size of fixed-σ runs (default: the run's)")
    parser.add_argument("--sampler", default=None, choices=ALL_SAMPLERS, help=f"sampler to {what} with (default: the run's; noise-annealed runs: heun, euler, dopri5, sde, pc)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar (shown on a terminal)")
    parser.add_argument("--device", default=None, help="where the field runs: cpu, cuda, cuda:N (default: the device the run trained on when this machine has it, else cpu)")


def _evaluate_options(evaluate) -> None:
    """The sampler options of ``evaluate`` and those of its image metrics by torch-fidelity."""
    _sampler_options(evaluate, "evaluate")
    evaluate.add_argument("--inception-weights", default=None, metavar="PATH", help="image runs: torch-fidelity's InceptionV3 weights (weights-inception-2015-12-05-6726825d.pth; see docs/image_metrics.md) for FID and Inception Score")
    evaluate.add_argument("--fid-reference", default=None, metavar="PATH", help="image runs: FID reference, an .npz of statistics (mu, sigma) or an .npy/.npz uint8 image array")
    evaluate.add_argument("--fid-n", type=int, default=None, metavar="N", help="samples for FID and Inception Score (default: the --n samples)")
    evaluate.add_argument("--precision-recall", action="store_true", help="also report precision and recall (needs an image array as --fid-reference)")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Flux Matching generative models: train, sample, evaluate.")
    commands = parser.add_subparsers(dest="command", metavar="{train,sample,evaluate,compare,experiment,simulate,velocity}")
    commands.required = True
    _train_parser(commands)
    _simulate_parser(commands)
    _velocity_parser(commands)

    sample = commands.add_parser("sample", help="draw samples from a trained run", description="Draw samples from a trained run's EMA field, in the data's own units (Langevin dynamics for fixed-σ fields; a noise-annealed sampler for σ-conditioned fields; the ODE for flow matching).")
    sample.add_argument("--run", default=DEFAULT_RUN, help=f"run directory (default: {DEFAULT_RUN})")
    sample.add_argument("--n", type=int, default=2000, help="number of samples (default: 2000)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sample.add_argument("--out", default=None, help="output .npy file (default: <run>/samples-seed<K>.npy)")
    _sampler_options(sample, "draw")
    sample.add_argument("--guidance", type=float, default=None, help="class-conditional runs: guidance scale, 0 = unconditional (default: the run's)")
    sample.add_argument("--label", type=int, default=None, help="class-conditional runs: draw only this class (default: all classes equally)")

    evaluate = commands.add_parser("evaluate", help="print sample metrics of a trained run as JSON", description="Sample a trained run and print its data kind's metrics against held-out data as JSON.")
    evaluate.add_argument("--run", default=DEFAULT_RUN, help=f"run directory (default: {DEFAULT_RUN})")
    evaluate.add_argument("--data", default=None, help="points runs: data to compare with (default: the run's own, held out)")
    evaluate.add_argument("--n", type=int, default=2000, help="number of samples and data points (default: 2000)")
    evaluate.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    _evaluate_options(evaluate)

    compare = commands.add_parser(
        "compare",
        help="train flux, DSM and flow matching side by side and compare their samples",
        description="Train each objective with the same network, optimizer, batch and steps; sample each with its natural sampler; write comparison.json, comparison.png (and nfe.png with --nfe).",
    )
    compare.add_argument("--data", default="8gaussians", help="toy set or .npy/.npz/.csv file (default: 8gaussians)")
    compare.add_argument("--objectives", default="flux,dsm,flow", help="comma-separated objectives (default: flux,dsm,flow)")
    compare.add_argument("--noise", default="fixed", choices=cfg.NOISES, help="noise schedule of flux and dsm: fixed σ (Langevin sampling) or annealed (EDM Heun) (default: fixed)")
    compare.add_argument("--steps", type=int, default=2000, help="optimizer steps for each objective (default: 2000)")
    compare.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    compare.add_argument("--out", default=None, help="output directory (default: runs/compare-<data>)")
    compare.add_argument("--nfe", type=_budgets, default=None, help="sampler budgets for the quality-vs-cost curve, e.g. 5,10,20,50,100,200")
    compare.add_argument("--batch-size", type=int, default=512, help="batch size (default: 512)")
    compare.add_argument("--sigma", type=float, default=0.2236, help="σ of fixed-noise flux and DSM (default: 0.2236)")
    compare.add_argument("--hidden", type=_hidden, default=(128, 128), help="MLP hidden widths (default: 128,128)")
    compare.add_argument("--eval-samples", type=int, default=2000, help="samples per method for the metrics (default: 2000)")
    compare.add_argument("--sample-steps", type=int, default=2000, help="Langevin steps for fixed-noise flux and DSM (default: 2000)")
    compare.add_argument("--step-size", type=float, default=0.005, help="Langevin step size ε (default: 0.005)")
    compare.add_argument("--no-progress", action="store_true", help="hide progress bars")
    compare.add_argument("--overwrite", action="store_true", help="replace the results of an earlier comparison in --out")
    experiment = commands.add_parser(
        "experiment",
        help="run one of the paper's studies at CPU scale: controllable, mixing, spiral, structure, dag",
        description="controllable: design weights on a 3-component mixture (frontier of mixing speed, cycle alignment, skewness); mixing: flux with and without the fast-mixing term against DSM (Langevin mixing curves on 8 Gaussians, FD against predictor-corrector NFE on the digits); spiral: the ring with a tangential reward, flux against DSM; "
        "structure: causal and full-attention transformers on the coupled springs, flux against DSM (W2 through training, the physics check, trajectory plots and a GIF); dag: a DAG-masked field on a nonlinear chain X → Y → Z, flux against DSM, masked and unconstrained.",
    )
    _experiment_arguments(experiment)
    return parser


def _experiment_arguments(experiment) -> None:
    """The options of ``fluxmatch experiment``."""
    experiment.add_argument("name", choices=("controllable", "mixing", "spiral", "structure", "dag"), help="which study")
    experiment.add_argument("--out", default=None, help="output directory (default: runs/experiment-<name>)")
    experiment.add_argument("--steps", type=int, default=None, help="training steps of every field (default: the study's)")
    experiment.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    experiment.add_argument("--n", type=int, default=None, help="samples / chains per measurement (default: the study's)")
    experiment.add_argument("--weight", type=float, default=None, help="mixing: weight of the fast-mixing term (default 0.01); spiral: weight of the rotation reward (default 0.5)")
    experiment.add_argument("--data", default=None, help="mixing: comma-separated data sets, toy sets (Langevin mixing curves) and digits (FD against predictor-corrector NFE) (default: 8gaussians,digits)")
    experiment.add_argument("--no-progress", action="store_true", help="hide progress bars")
    experiment.add_argument("--overwrite", action="store_true", help="replace the results of an earlier study in --out")
    experiment.add_argument("--full", action="store_true", help="structure: the official code's sizes (transformer width 512, depth 12, 8 heads, 10,000 steps) on a GPU")


def _default_out(data: str, objective: str) -> str:
    name = Path(data).stem if Path(data).suffix else data.split(":", 1)[0]
    return str(Path("runs") / f"{name}-{objective}")


def _number(value) -> str:
    from .kinds.base import format_number

    return format_number(value)


def train_spec(args: argparse.Namespace) -> cfg.RunSpec:
    """The resolved run spec of ``fluxmatch train``'s arguments: the preset or spec file, then the flags."""
    from .run.directory import is_run_dir
    from .run.train import stored_spec

    given = vars(args)
    if "preset" in given and "config" in given:
        raise FluxMatchError("give --preset or --config, not both")
    base, from_file = cfg.RunSpec(), {}
    if "preset" in given:
        base = cfg.preset(given["preset"])
    if "config" in given:
        base, from_file = cfg.load_spec(given["config"])
    elif given.get("resume") and "preset" not in given:
        flagged = cfg.with_options(cfg.RunSpec(), {k: v for k, v in given.items() if k in ("data", "objective")})
        out = Path(given.get("out") or _default_out(flagged.data.spec, flagged.objective.name))
        if is_run_dir(out):
            base = stored_spec(out)[0] or base  # resuming: the run's own spec (runs older than specs have none), which flags may only extend
    flags = {k: v for k, v in given.items() if k in cfg.FLAT_OPTIONS or k in cfg.DESIGN_NAMES}
    if flags.get("class_conditional") is False:
        del flags["class_conditional"]
    return cfg.resolve(cfg.with_options(base, flags))


def _train(args) -> None:
    from .run import train_run

    spec = train_spec(args)
    if args.dry_run:
        print(cfg.dumps(spec))
        return
    out = getattr(args, "out", None) or _default_out(spec.data.spec, spec.objective.name)
    from .train.distributed import initialise, shutdown

    ctx = initialise(spec.train.device)  # under torchrun: join the other ranks (gloo on CPU, NCCL on GPUs)
    try:
        result = train_run(spec, out, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    finally:
        shutdown()
    if not ctx.is_main:
        return  # rank 0 reports
    train = result["train"]
    print(f"trained {spec.objective.name} ({spec.objective.noise or 'flow'}) on {spec.data.spec} for {train['steps']} steps "
          f"in {train['wall_time_s']:.1f} s (median {_number(train['median_step_ms'])} ms/step)")
    from .kinds import get_kind

    for line in get_kind(spec.data.kind).summary(result):
        print(line)
    print("wrote:")
    for name in result["files"]:
        print(f"  {Path(out) / name}")


def _bar(args) -> bool:
    """Whether sample/evaluate show a progress bar: on a terminal, unless --no-progress."""
    return not args.no_progress and sys.stderr.isatty()


def _sampler_overrides(args) -> dict:
    return {"steps": args.steps, "step_size": args.step_size, "method": args.sampler}


def _sample(args) -> None:
    from .run import sample_run

    out = args.out or str(Path(args.run) / f"samples-seed{args.seed}.npy")
    samples = sample_run(args.run, n=args.n, seed=args.seed, out=out, label=args.label, progress=_bar(args), guidance=args.guidance, device=args.device, **_sampler_overrides(args))
    print(f"wrote {samples.shape[0]} samples of shape {tuple(samples.shape[1:])} to {out}")


def _evaluate(args) -> None:
    from .run import evaluate_run

    fidelity = _fidelity_config(args)
    metrics = evaluate_run(args.run, data=args.data, n=args.n, seed=args.seed, progress=_bar(args), fidelity=fidelity, fid_n=args.fid_n, device=args.device, **_sampler_overrides(args))
    print(json.dumps(metrics, indent=2))


def _fidelity_config(args):
    """The FidelityConfig of evaluate's --inception-weights and --fid-reference (both or neither)."""
    weights, reference = args.inception_weights, args.fid_reference
    if weights is None and reference is None:
        if args.fid_n is not None or args.precision_recall:
            raise FluxMatchError(f"{'--fid-n' if args.fid_n is not None else '--precision-recall'} needs --inception-weights and --fid-reference")
        return None
    if weights is None or reference is None:
        given, missing = ("--fid-reference", "--inception-weights") if weights is None else ("--inception-weights", "--fid-reference")
        raise FluxMatchError(f"{given} needs {missing} too: FID compares the samples' Inception features with a reference (see docs/image_metrics.md)")
    from .metrics.fidelity import FidelityConfig

    return FidelityConfig(weights, fid_reference=reference, precision_recall=args.precision_recall)


def _compare(args) -> None:
    from .compare import CompareSettings, compare_objectives, format_table
    from .run.directory import study_dir

    name = Path(args.data).stem if Path(args.data).suffix else args.data
    out = args.out or str(Path("runs") / f"compare-{name}")
    study_dir(out, args.overwrite)
    settings = CompareSettings(
        data=args.data, objectives=args.objectives, noise=args.noise, steps=args.steps, seed=args.seed, nfe=args.nfe,
        batch_size=args.batch_size, sigma=args.sigma, hidden=args.hidden, n_eval=args.eval_samples,
        sample_steps=args.sample_steps, step_size=args.step_size,
    )
    report = compare_objectives(settings, out, progress=not args.no_progress)
    print(format_table(report))
    written = ["comparison.json", "comparison.png"] + (["nfe.png"] if "nfe_curve" in report else [])
    print("wrote:\n" + "\n".join(f"  {Path(out) / name}" for name in written))


def _experiment(args) -> None:
    from .experiments import EXPERIMENTS
    from .run.directory import study_dir

    out = args.out or str(Path("runs") / f"experiment-{args.name}")
    study_dir(out, args.overwrite)
    options = {"out": out, "seed": args.seed, "progress": not args.no_progress}
    if args.steps is not None:
        options["steps"] = args.steps
    if args.n is not None:
        options["n"] = args.n
    if args.full:
        if args.name != "structure":
            raise FluxMatchError("--full applies to the structure study")
        options["full"] = True
    if args.data is not None:
        if args.name != "mixing":
            raise FluxMatchError(f"--data applies to the mixing study, not {args.name}")
        options["datasets"] = tuple(name.strip() for name in args.data.split(",") if name.strip())
    if args.weight is not None:
        if args.name in ("structure", "dag"):
            raise FluxMatchError(f"--weight applies to the mixing and spiral studies, not {args.name}")
        if args.name == "controllable":
            raise FluxMatchError("the controllable study sweeps its own weights: --weight applies to mixing and spiral")
        options["mixing_weight" if args.name == "mixing" else "weight"] = args.weight
    report = EXPERIMENTS[args.name](**options)
    _print_experiment(args.name, report)
    print("wrote:\n" + "\n".join(f"  {Path(out) / name}" for name in report["files"]))


def _print_experiment(name: str, report: dict) -> None:
    if name == "mixing":
        for data in (k for k in report if k not in ("settings", "files")):
            r = report[data]
            if "target_fd" in r:
                print(f"{data}: DSM's FD at {r['target_nfe']} NFE {_number(r['target_fd'])} (floor {_number(r['floor_fd'])}); predictor-corrector NFE to reach it: "
                      + ", ".join(f"{m} {v if v is not None else 'never'}" for m, v in r["nfe_to_target"].items()))
                continue
            print(f"{data}: DSM final W2 {_number(r['target_w2'])} (floor {_number(r['floor_w2'])}); steps to reach it: "
                  + ", ".join(f"{m} {v if v is not None else 'never'}" for m, v in r["steps_to_target"].items()))
        return
    rows = report["rows"]
    items = list(rows.items()) if isinstance(rows, dict) else [(r["label"], r) for r in rows]
    if "floor_w2" in report:
        print(f"data-vs-data floor W2: {_number(report['floor_w2'])}")
    columns = ("w2", "best_w2", "floor_w2", "dynamics_relative_rms", "outside_causal_order", "mean_abs_curl", "mixing_speed", "cycle_alignment", "skewness")
    keys = [k for k in columns if k in items[0][1]]
    widths = [max(16, len(k) + 2) for k in keys]
    print(f"{'field':<24}" + "".join(f"{k:>{w}}" for k, w in zip(keys, widths)))
    for label, row in items:
        print(f"{label:<24}" + "".join(f"{_number(row[k]):>{w}}" for k, w in zip(keys, widths)))
    for name, value in (report.get("ratios") or {}).items():
        print(f"{name}: {value if isinstance(value, str) else _number(value)}")


def _simulate(args) -> None:
    from .train.checkpoint import check_writable_target

    out = Path(args.out)
    suffix = ".npz" if args.system == "springs" else ".h5ad"
    if out.suffix.lower() != suffix:
        raise FluxMatchError(f"--out must name an {suffix} file for {args.system}, got {args.out}")
    given = {name for name in vars(args) if getattr(args, name) is not None}
    foreign = [name for name, *_ in (CELL_OPTIONS if args.system == "springs" else SPRING_OPTIONS) if name in given]
    if args.system == "cells" and args.n is not None:
        foreign.insert(0, "n")
    if foreign:
        other = "cells" if args.system == "springs" else "springs"
        hint = " (use --n-cells)" if foreign[0] == "n" else ""
        raise FluxMatchError(f"--{foreign[0].replace('_', '-')} applies to simulate {other}, not {args.system}{hint}")
    if out.exists() and not args.overwrite:
        raise FluxMatchError(f"{out} exists: give --overwrite to replace it, or another --out")
    check_writable_target(out)
    if args.system == "cells":
        _simulate_cells(args, out)
        return
    from .data.springs import SpringParams, save_springs

    n = 2000 if args.n is None else args.n
    changes = {name: getattr(args, name) for name, _, _ in SPRING_OPTIONS if getattr(args, name) is not None}
    params = SpringParams(**changes)
    path = save_springs(out, n, seed=args.seed, params=params)
    print(f"wrote {n} springs trajectories of {params.steps} states × 4 features (q1, v1, q2, v2) to {path}")


def _simulate_cells(args, out: Path) -> None:
    from .data.cells import write_cells
    from .data.lineage import LineageParams, simulate_lineage

    params = LineageParams(**{name: getattr(args, name) for name, *_ in CELL_OPTIONS if getattr(args, name) is not None})
    adata = simulate_lineage(params, seed=args.seed)
    path = write_cells(adata, out, overwrite=args.overwrite)
    fates = ", ".join(sorted({str(c) for c in adata.obs["clusters"]}))
    print(f"wrote {adata.n_obs} cells × {adata.n_vars} genes ({params.n_fates} fate(s); clusters {fates}) with the true velocities and rates to {path}")


def _velocity_parser(commands) -> None:
    velocity = commands.add_parser(
        "velocity", help="RNA velocity of single cells by Flux Matching (optionally beside scVelo's dynamical model)",
        description="Preprocess the cells of an .h5ad (spliced/unspliced layers) to moments, fit a splicing-kinetics field by gene-local Flux Matching "
        "so that the observed population is stationary, and write OUT.h5ad (layers velocity, velocity_unspliced, flux_alpha; var flux_beta, flux_gamma; "
        "obsm velocity_<embedding>), velocity.json (CBDir per transition and overall, velocity confidence, run time, and against the truth when the data "
        "carry it) and velocity.png (streams on the embedding) beside OUT.",
    )
    add = velocity.add_argument
    add("--data", required=True, help="input .h5ad with layers['spliced'] and layers['unspliced'] (raw counts)")
    add("--out", required=True, help="output .h5ad (velocity.json and velocity.png are written beside it)")
    add("--transitions", default=None, help="cluster transitions to score, quoted, e.g. 'A>B,B>C' (default: uns['transitions'] when present)")
    add("--cluster-key", default=None, help="obs column of the cluster names (default: 'clusters' when present)")
    add("--baseline", choices=("scvelo",), default=None, help="also fit scVelo's dynamical model on the same preprocessed cells (needs pip install 'fluxmatch[rna]')")
    add("--embedding-key", default=None, help="obsm embedding to project on, e.g. X_umap (default: X_umap, X_tsne or X_lineage when present, else computed)")
    add("--overwrite", action="store_true", help="replace existing output files")
    add("--no-progress", action="store_true", help="hide the progress bar")
    fit = velocity.add_argument_group("the kinetic field and its fit")
    fit.add_argument("--variant", choices=("kinetic", "regulatory"), default=None, help="kinetic: the paper's per-gene kinetics; regulatory: plus a sparse learned gene network (default: kinetic)")
    fit.add_argument("--state-rank", type=int, default=None, help="cell-state directions the splicing and degradation rates depend on (default: 0, one rate per gene)")
    for name, kind, what in VELOCITY_OPTIONS:
        fit.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=what)
    prep = velocity.add_argument_group("preprocessing")
    prep.add_argument("--preprocess", choices=("auto", "fluxmatch", "scvelo"), default="auto", help="auto: scVelo's pipeline when installed, else fluxmatch's own (default: auto)")
    for name, what in PREPROCESS_OPTIONS:
        prep.add_argument("--" + name.replace("_", "-"), type=int, default=None, help=what)


#: Fit options of ``fluxmatch velocity``: (VelocityConfig field, type, help).
VELOCITY_OPTIONS = (
    ("scale", str, "gene: divide each gene's u and s by the std of its Ms; none: raw moments (default: gene)"),
    ("sigma", float, "σ of the gene-local reference, in the scaled units (default: see docs/velocity.md)"),
    ("epochs", int, "passes over the cells"),
    ("batch_size", int, "cells per batch (the reference is built from the batch)"),
    ("lr", float, "Adam learning rate"),
    ("l1", float, "regulatory variant: weight of the network's L1 penalty"),
    ("horizon", float, "largest horizon of the reference dynamics (relaxation times)"),
    ("substeps", int, "substeps of the reference dynamics"),
    ("seed", int, "random seed (default: 0)"),
)

#: Preprocessing options: (PreprocessConfig field, help).
PREPROCESS_OPTIONS = (
    ("min_shared_counts", "a gene's smallest count total over cells with both unspliced and spliced counts (default: 20)"),
    ("n_top_genes", "most variable genes kept (default: 2000)"),
    ("n_pcs", "principal components of the neighbour graph (default: 30)"),
    ("n_neighbors", "neighbours per cell (default: 30)"),
)


def _velocity(args) -> None:
    from .data.cells import PreprocessConfig
    from .run.rna_velocity import VelocityRequest, output_paths, run_velocity
    from .run.velocity import VelocityConfig

    if args.scale is not None and args.scale not in ("gene", "none"):
        raise FluxMatchError(f"--scale must be gene or none, got {args.scale!r}")
    fit = {name: getattr(args, name) for name in ("variant", "state_rank", *(n for n, *_ in VELOCITY_OPTIONS)) if getattr(args, name) is not None}
    if "l1" in fit and fit.get("variant") != "regulatory":
        raise FluxMatchError("--l1 applies to --variant regulatory")
    prep = {name: getattr(args, name) for name, _ in PREPROCESS_OPTIONS if getattr(args, name) is not None}
    request = VelocityRequest(args.data, args.out, args.transitions, args.cluster_key, args.baseline, args.embedding_key, args.overwrite)
    report = run_velocity(request, PreprocessConfig(backend=args.preprocess, **prep), VelocityConfig(**fit), progress=not args.no_progress)
    print(format_velocity(report))
    for note in report["notes"]:
        print(f"note: {note}")
    print("wrote:\n" + "\n".join(f"  {path}" for path in output_paths(request).values()))


def format_velocity(report: dict) -> str:
    """The velocity report as a small table: one row per method."""
    prep = report["preprocessing"]
    lines = [f"{report['cells']} cells × {report['genes']} genes; preprocessing: {prep['backend']}; embedding: {report['embedding']}"]
    columns = (("CBDir", lambda m: m.get("cbdir", {}).get("overall")), ("confidence", lambda m: m["velocity_confidence"]),
               ("cos(truth)", lambda m: m.get("cosine_to_truth", {}).get("median")), ("γ/β ρ", lambda m: m.get("gamma_over_beta_spearman")),
               ("seconds", lambda m: m.get("seconds")))
    lines.append(f"{'method':<12}" + "".join(f"{name:>12}" for name, _ in columns))
    for method in ("flux", "scvelo", "truth"):
        metrics = report.get(method)
        if metrics and "skipped" not in metrics:
            lines.append(f"{method:<12}" + "".join(f"{_number(get(metrics)) if get(metrics) is not None else '-':>12}" for _, get in columns))
    return "\n".join(lines)


COMMANDS = {"train": _train, "sample": _sample, "evaluate": _evaluate, "compare": _compare, "experiment": _experiment, "simulate": _simulate, "velocity": _velocity}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: ``sys.argv[1:]``); returns 0 on success.

    Bad input raises ``SystemExit(2)`` after printing ``fluxmatch: error: <message>`` to stderr.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except TrainingInterrupted as err:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for every rank
            print(f"{PROG}: {err.signal_name} received: stopped at step {err.step}, checkpoint written; resume with: {PROG} train --out {err.run_dir} --resume", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    except FluxMatchError as err:
        _fail(str(err))
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly
        sys.stderr.close()
        raise SystemExit(0) from None
    except OSError as err:  # a missing, unreadable or unwritable path, a full disk
        _fail(f"{err.strerror or type(err).__name__}: {err.filename}" if err.filename else (str(err) or type(err).__name__))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as err:  # out of memory, or a bug: one line for the user, the traceback on request
        if isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and ("can't allocate memory" in str(err) or "out of memory" in str(err))):
            _fail("out of memory: try fewer samples (--n), a smaller batch (--batch-size) or a smaller field")
        if os.environ.get("FLUXMATCH_DEBUG"):
            raise
        text = " ".join(str(err).split())[:300]
        print(f"{PROG}: internal error: {type(err).__name__}: {text} (this is a bug in fluxmatch; set FLUXMATCH_DEBUG=1 for the traceback)", file=sys.stderr)
        raise SystemExit(EXIT_INTERNAL) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
