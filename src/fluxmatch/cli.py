"""The ``fluxmatch`` command line: ``train``, ``sample`` and ``evaluate`` (logic in :mod:`fluxmatch.pipeline`).

Bad input (a :class:`~fluxmatch.errors.FluxMatchError`, a missing file, or a bad option) ends
the program with one line ``fluxmatch: error: <message>`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .errors import FluxMatchError

PROG = "fluxmatch"
EXIT_BAD_INPUT = 2
DEFAULT_RUN = "runs/ring-flux"
SAMPLERS = ("heun", "euler", "dopri5", "sde", "pc")  # noise-annealed samplers of image runs
DESIGN_TERMS = ("mixing", "rotation", "curl", "skew", "sparsity")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str):
        _fail(message)


def _fail(message: str):
    text = " ".join(str(message).split()) or "unknown error"
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


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Flux Matching generative models: train, sample, evaluate.")
    commands = parser.add_subparsers(dest="command", metavar="{train,sample,evaluate,compare,experiment}")
    commands.required = True

    train = commands.add_parser("train", help="train a field and write a run directory", description="Train a field, sample it and evaluate the samples; every option has a default (the ring demo).")
    train.add_argument("--data", default="ring", help="toy set (ring, 8gaussians, moons, checkerboard, spirals, triangle), digits (8×8 images), cifar10:PATH or celeba64:PATH (your copy; nothing is downloaded), or a .npy/.npz/.csv file (default: ring)")
    train.add_argument("--objective", default="flux", choices=("flux", "dsm", "flow"), help="training objective (default: flux)")
    train.add_argument("--steps", type=int, default=None, help="optimizer steps (default: 2000; images 6000)")
    train.add_argument("--batch-size", type=int, default=None, help="batch size (default: 512; images 128)")
    train.add_argument("--sigma", type=float, default=0.2236, help="noise level σ > 0 in data units (default: 0.2236)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    train.add_argument("--out", default=None, help="run directory (default: runs/<data>-<objective>)")
    train.add_argument("--hidden", type=_hidden, default=(128, 128), help="MLP hidden widths (default: 128,128)")
    train.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default: 1e-3)")
    train.add_argument("--estimator", default="potential", choices=("potential", "product", "gradient"), help="flux gradient estimator (default: potential)")
    train.add_argument("--dynamics", default="component", choices=("component", "langevin"), help="reference kernel of the product/gradient estimators (default: component)")
    train.add_argument("--horizon-sampler", default="exponential", choices=("uniform", "exponential"), help="flux horizon sampler for the product/gradient estimators (default: exponential)")
    train.add_argument("--path", default="ot", choices=("ot", "vp", "ve"), help="flow-matching probability path (default: ot)")
    train.add_argument("--coupling", default="independent", choices=("independent", "ot", "exact", "sinkhorn"), help="flow-matching noise-data coupling (default: independent)")
    train.add_argument("--grad-clip", type=_clip, default=1.0, help="largest gradient norm per parameter group, or 'none' (default: 1.0)")
    train.add_argument("--divergence", default="auto", choices=("auto", "exact", "hutchinson"), help="flux divergence estimator (default: auto)")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --out up to --steps")
    train.add_argument("--no-progress", action="store_true", help="hide progress bars")
    train.add_argument("--eval-samples", type=int, default=None, help="samples drawn for evaluation (default: 2000; images 1000)")
    train.add_argument("--sample-steps", type=int, default=None, help="Langevin steps for sampling (default: 2000); images: noise levels of the sampler (default: 18)")
    train.add_argument("--step-size", type=float, default=0.005, help="Langevin step size ε (default: 0.005)")
    train.add_argument("--device", default="cpu", help="where training runs: cpu, cuda, cuda:N or auto (default: cpu)")
    train.add_argument("--config", default=None, help="JSON file of option defaults (e.g. configs/cifar10.json); flags given on the command line win")
    design = train.add_argument_group("design terms (flux or dsm; weights added to the loss)")
    design.add_argument("--mixing", type=float, default=None, metavar="WEIGHT", help="fast-mixing term: Sinkhorn divergence after one Langevin step (10 sampler steps long) from perturbed points, relative to before (reference weight 0.01)")
    design.add_argument("--rotation", type=float, default=None, metavar="WEIGHT", help="reward for counter-clockwise tangential flow about the origin (2-D)")
    design.add_argument("--curl", type=float, default=None, metavar="WEIGHT", help="squared distance of the field's curl to 1 (2-D)")
    design.add_argument("--skew", type=float, default=None, metavar="WEIGHT", help="reward for the antisymmetric part of the field's Jacobian")
    design.add_argument("--sparsity", type=float, default=None, metavar="WEIGHT", help="L1 penalty on the off-diagonal Jacobian (interpretable dependencies)")
    parser.train_parser = train
    image = train.add_argument_group("image runs (--data digits, cifar10:PATH, celeba64:PATH)")
    image.add_argument("--unet", default="digits", help="UNet size preset: digits, cifar10, celeba64 (default: digits)")
    image.add_argument("--class-conditional", action="store_true", help="condition the field on the labels (classifier-free guidance; 10%% label dropout)")
    image.add_argument("--sampler", default=None, choices=SAMPLERS, help="noise-annealed sampler stored as the run's default (default: heun)")
    image.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale stored as the run's default (default: 1)")
    image.add_argument("--nll-samples", type=int, default=200, help="held-out images whose NLL (bits/dim) is measured; 0 skips it (default: 200)")

    sample = commands.add_parser("sample", help="draw samples from a trained run", description="Draw samples from a trained run's EMA field (Langevin dynamics; a flow run's ODE; an image run's noise-annealed sampler, in the data's own units).")
    sample.add_argument("--run", default=DEFAULT_RUN, help=f"run directory (default: {DEFAULT_RUN})")
    sample.add_argument("--n", type=int, default=2000, help="number of samples (default: 2000)")
    sample.add_argument("--steps", type=int, default=None, help="Langevin steps (default: the run's)")
    sample.add_argument("--step-size", type=float, default=None, help="Langevin step size (default: the run's)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    sample.add_argument("--out", default=None, help="output .npy file (default: <run>/samples-seed<K>.npy)")
    sample.add_argument("--sampler", default=None, choices=SAMPLERS, help="image runs: heun, euler, dopri5 (probability-flow ODE), sde (reverse SDE), pc (predictor-corrector) (default: the run's)")
    sample.add_argument("--guidance", type=float, default=None, help="image runs, class-conditional: guidance scale, 0 = unconditional (default: the run's)")
    sample.add_argument("--label", type=int, default=None, help="image runs, class-conditional: draw only this class (default: all classes equally)")

    evaluate = commands.add_parser("evaluate", help="print sample metrics of a trained run as JSON", description="Sample a trained run and print metrics against held-out data as JSON.")
    evaluate.add_argument("--run", default=DEFAULT_RUN, help=f"run directory (default: {DEFAULT_RUN})")
    evaluate.add_argument("--data", default=None, help="data to compare with (default: the run's own, held out)")
    evaluate.add_argument("--n", type=int, default=2000, help="number of samples and data points (default: 2000)")
    evaluate.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    evaluate.add_argument("--steps", type=int, default=None, help="Langevin steps (default: the run's)")
    evaluate.add_argument("--step-size", type=float, default=None, help="Langevin step size (default: the run's)")

    compare = commands.add_parser(
        "compare",
        help="train flux, DSM and flow matching side by side and compare their samples",
        description="Train each objective with the same network, optimizer, batch and steps; sample each with its natural sampler; write comparison.json, comparison.png (and nfe.png with --nfe).",
    )
    compare.add_argument("--data", default="8gaussians", help="toy set or .npy/.npz/.csv file (default: 8gaussians)")
    compare.add_argument("--objectives", default="flux,dsm,flow", help="comma-separated objectives (default: flux,dsm,flow)")
    compare.add_argument("--steps", type=int, default=2000, help="optimizer steps for each objective (default: 2000)")
    compare.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    compare.add_argument("--out", default=None, help="output directory (default: runs/compare-<data>)")
    compare.add_argument("--nfe", type=_budgets, default=None, help="sampler budgets for the quality-vs-cost curve, e.g. 5,10,20,50,100,200")
    compare.add_argument("--batch-size", type=int, default=512, help="batch size (default: 512)")
    compare.add_argument("--sigma", type=float, default=0.2236, help="σ of flux and DSM (default: 0.2236)")
    compare.add_argument("--hidden", type=_hidden, default=(128, 128), help="MLP hidden widths (default: 128,128)")
    compare.add_argument("--eval-samples", type=int, default=2000, help="samples per method for the metrics (default: 2000)")
    compare.add_argument("--sample-steps", type=int, default=2000, help="Langevin steps for flux and DSM (default: 2000)")
    compare.add_argument("--step-size", type=float, default=0.005, help="Langevin step size ε (default: 0.005)")
    compare.add_argument("--no-progress", action="store_true", help="hide progress bars")
    experiment = commands.add_parser(
        "experiment",
        help="run one of the paper's studies at CPU scale: controllable, mixing, spiral",
        description="controllable: design weights on a 3-component mixture (frontier of mixing speed, cycle alignment, skewness); mixing: flux with and without the fast-mixing term against DSM (mixing curves); spiral: the ring with a tangential reward, flux against DSM.",
    )
    experiment.add_argument("name", choices=("controllable", "mixing", "spiral"), help="which study")
    experiment.add_argument("--out", default=None, help="output directory (default: runs/experiment-<name>)")
    experiment.add_argument("--steps", type=int, default=None, help="training steps of every field (default: the study's)")
    experiment.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    experiment.add_argument("--n", type=int, default=None, help="samples / chains per measurement (default: the study's)")
    experiment.add_argument("--weight", type=float, default=None, help="mixing: weight of the fast-mixing term (default 0.01); spiral: weight of the rotation reward (default 0.5)")
    experiment.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def _default_out(data: str, objective: str) -> str:
    name = Path(data).stem if Path(data).suffix else data
    return str(Path("runs") / f"{name}-{objective}")


def _number(value) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


def _is_image_spec(data: str) -> bool:
    return data == "digits" or data.split(":", 1)[0] in ("cifar10", "celeba64")


def _image_options(args) -> dict:
    """The image-run options the user set (the image pipeline's defaults fill the rest)."""
    options: dict = {}
    if args.unet != "digits":
        options["preset"] = args.unet
    if args.class_conditional:
        options["class_conditional"] = True
    sampler = {k: v for k, v in (("method", args.sampler), ("guidance", args.guidance)) if v is not None}
    if sampler:
        options["sampler"] = sampler
    if args.nll_samples != 200:
        options["nll_n"] = args.nll_samples
    return options


def _print_image_result(result: dict) -> None:
    for key in ("fd_digits", "fd_digits_floor", "class_coverage", "nll_bits_per_dim"):
        if key in result:
            print(f"{key:<18} {_number(result[key])}")


def _train(args) -> None:
    from .pipeline import train_run

    out = args.out or _default_out(args.data, args.objective)
    result = train_run(
        data=args.data,
        objective=args.objective,
        steps=args.steps,
        batch_size=args.batch_size,
        sigma=args.sigma,
        seed=args.seed,
        out=out,
        hidden=args.hidden,
        lr=args.lr,
        horizon_sampler=args.horizon_sampler,
        divergence=args.divergence,
        grad_clip=args.grad_clip,
        resume=args.resume,
        progress=not args.no_progress,
        n_eval=args.eval_samples,
        sample_steps=args.sample_steps,
        step_size=args.step_size,
        **({"estimator": args.estimator} if args.objective == "flux" and args.estimator != "potential" else {}),
        **({"dynamics": args.dynamics} if args.objective == "flux" and args.dynamics != "component" else {}),
        **({"image": _image_options(args)} if _is_image_spec(args.data) or _image_options(args) else {}),
        device=args.device,
        design={name: getattr(args, name) for name in DESIGN_TERMS if getattr(args, name) is not None},
        **({"path": args.path, "coupling": args.coupling} if args.objective == "flow" else {}),
    )
    train = result["train"]
    print(
        f"trained {args.objective} on {args.data} for {train['steps']} steps "
        f"in {train['wall_time_s']:.1f} s (median {_number(train['median_step_ms'])} ms/step)"
    )
    if "w2" not in result:
        _print_image_result(result)
        print("wrote:")
        for name in result["files"]:
            print(f"  {Path(out) / name}")
        return
    print(f"{'metric':<10} {'samples':>10} {'floor':>10}")
    for key in ("w2", "sliced_w2", "mmd", "energy"):
        print(f"{key:<10} {_number(result[key]):>10} {_number(result.get('floor_' + key)):>10}")
    if result.get("mean_abs_curl") is not None:
        print(f"mean |curl| of the field on held-out data: {_number(result['mean_abs_curl'])}")
    print("wrote:")
    for name in result["files"]:
        print(f"  {Path(out) / name}")


def _sample(args) -> None:
    from .pipeline import sample_run

    out = args.out or str(Path(args.run) / f"samples-seed{args.seed}.npy")
    samples = sample_run(args.run, n=args.n, steps=args.steps, step_size=args.step_size, seed=args.seed, out=out, sampler=args.sampler, guidance=args.guidance, label=args.label)
    print(f"wrote {samples.shape[0]} samples of shape {tuple(samples.shape[1:])} to {out}")


def _evaluate(args) -> None:
    from .pipeline import evaluate_run

    metrics = evaluate_run(args.run, data=args.data, n=args.n, seed=args.seed, steps=args.steps, step_size=args.step_size)
    print(json.dumps(metrics, indent=2))


def _compare(args) -> None:
    from .compare import compare_objectives, format_table

    name = Path(args.data).stem if Path(args.data).suffix else args.data
    out = args.out or str(Path("runs") / f"compare-{name}")
    report = compare_objectives(
        data=args.data, objectives=args.objectives, steps=args.steps, seed=args.seed, out=out, nfe=args.nfe,
        batch_size=args.batch_size, sigma=args.sigma, hidden=args.hidden, n_eval=args.eval_samples,
        sample_steps=args.sample_steps, step_size=args.step_size, progress=not args.no_progress,
    )
    print(format_table(report))
    written = ["comparison.json", "comparison.png"] + (["nfe.png"] if "nfe_curve" in report else [])
    print("wrote:\n" + "\n".join(f"  {Path(out) / name}" for name in written))


def _with_config(parser, argv, path: str):
    """Re-parse ``argv`` with the train options in the JSON file ``path`` as defaults."""
    try:
        config = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FluxMatchError(f"config file not found: {path}") from None
    except (OSError, json.JSONDecodeError) as err:
        raise FluxMatchError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(config, dict):
        raise FluxMatchError(f"{path}: expected a JSON object of train options")
    train = parser.train_parser
    known = {action.dest for action in train._actions}
    options = {key.replace("-", "_"): value for key, value in config.items() if not key.startswith("_")}
    unknown = sorted(set(options) - known)
    if unknown:
        raise FluxMatchError(f"{path}: unknown train options {', '.join(unknown)}")
    if isinstance(options.get("hidden"), list):
        options["hidden"] = tuple(options["hidden"])
    train.set_defaults(**options)
    return parser.parse_args(argv)


def _experiment(args) -> None:
    from .experiments import EXPERIMENTS

    out = args.out or str(Path("runs") / f"experiment-{args.name}")
    options = {"out": out, "seed": args.seed, "progress": not args.no_progress}
    if args.steps is not None:
        options["steps"] = args.steps
    if args.n is not None:
        options["n"] = args.n
    if args.weight is not None:
        if args.name == "controllable":
            raise FluxMatchError("the controllable study sweeps its own weights: --weight applies to mixing and spiral")
        options["mixing_weight" if args.name == "mixing" else "weight"] = args.weight
    report = EXPERIMENTS[args.name](**options)
    if args.name == "mixing":
        for data in (k for k in report if k not in ("settings", "files")):
            r = report[data]
            print(f"{data}: DSM final W2 {_number(r['target_w2'])} (floor {_number(r['floor_w2'])}); steps to reach it: "
                  + ", ".join(f"{m} {v if v is not None else 'never'}" for m, v in r["steps_to_target"].items()))
    else:
        rows = report["rows"]
        items = rows.items() if isinstance(rows, dict) else ((r["label"], r) for r in rows)
        keys = [k for k in ("w2", "floor_w2", "mean_abs_curl", "mixing_speed", "cycle_alignment", "skewness") if k in next(iter(rows.values() if isinstance(rows, dict) else rows))]
        print(f"{'field':<24}" + "".join(f"{k:>16}" for k in keys))
        for label, row in items:
            print(f"{label:<24}" + "".join(f"{_number(row[k]):>16}" for k in keys))
    print("wrote:\n" + "\n".join(f"  {Path(out) / name}" for name in report["files"]))


COMMANDS = {"train": _train, "sample": _sample, "evaluate": _evaluate, "compare": _compare, "experiment": _experiment}


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: ``sys.argv[1:]``); returns 0 on success.

    Bad input raises ``SystemExit(2)`` after printing ``fluxmatch: error: <message>`` to stderr.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        if getattr(args, "config", None):
            args = _with_config(parser, argv, args.config)
        COMMANDS[args.command](args)
    except FluxMatchError as err:
        _fail(str(err))
    except FileNotFoundError as err:
        _fail(f"{err.strerror or 'file not found'}: {err.filename}" if err.filename else str(err))
    except BrokenPipeError:  # the reader went away (e.g. `| head`): stop quietly
        sys.stderr.close()
        raise SystemExit(0) from None
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
