"""FD-digits against the sampler's budget for trained digits runs (prints JSON, draws a figure).

    python benchmarks/digits_fd_vs_nfe.py --runs runs/digits-dsm,runs/digits-flux [--samplers heun,pc]
        [--levels 4,6,9,12,18] [--n 1000] [--seed 0] [--out runs/fd-vs-nfe]

For each run and each sampler ("heun", "euler", "sde", "pc" at each number of noise levels, and
"dopri5", the adaptive probability-flow ODE, once), 1000 samples are drawn with seed 0 and
scored by FD-digits against the 359 held-out digits (and class coverage). The NFE is the
sampler's own count of field evaluations per sample. The figure plots FD against NFE, one line
per run and sampler. For split fields (``--estimator split``) the flux head's share of the
field, |w|/|s| on held-out digits noised at σ, is reported at a few σ.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fluxmatch.metrics.images import image_metrics
from fluxmatch.run.run import open_run
from fluxmatch.run.sampling import draw, sampler_for

SHARE_SIGMAS = (0.002, 0.02, 0.2, 2.0, 20.0)


def flux_share(run, held: torch.Tensor) -> dict | None:
    """σ → |w|/|s| (batch means of the per-image norms) for a split field; None otherwise."""
    if not callable(getattr(run.field, "parts", None)):
        return None
    generator = torch.Generator().manual_seed(0)
    share = {}
    for s in SHARE_SIGMAS:
        x0 = held + s * torch.randn(held.shape, generator=generator)
        with torch.no_grad():
            score, flux = run.field.parts(x0, torch.full((held.shape[0],), s))
        share[str(s)] = round(float(flux.flatten(1).norm(dim=1).mean() / score.flatten(1).norm(dim=1).mean()), 4)
    return share


def score_run(path: str, samplers: list[str], levels: list[int], n: int, seed: int) -> dict:
    run = open_run(path)
    held = run.kind.reload(run).held_out
    rows = []
    budgets = [(m, k) for m in samplers for k in levels] + [("dopri5", None)]
    for method, steps in budgets:
        samples, nfe = draw(run, n, seed, sampler_for(run, method=method, steps=steps))
        m = image_metrics(samples, held, seed=seed)
        rows.append({"sampler": method, "levels": steps, "nfe": int(nfe), "fd_digits": round(m["fd_digits"], 3), "class_coverage": m["class_coverage"]})
        print(json.dumps({"run": path, **rows[-1]}), flush=True)
    return {"run": path, "objective": run.spec.objective.name, "estimator": run.spec.objective.estimator,
            "design": run.spec.objective.design, "floor": round(m["fd_digits_floor"], 3), "rows": rows,
            "flux_share": flux_share(run, held[:300])}


def plot(report: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for entry in report:
        name = Path(entry["run"]).name
        by_sampler: dict = {}
        for row in entry["rows"]:
            by_sampler.setdefault(row["sampler"], []).append(row)
        for method, rows in by_sampler.items():
            rows = sorted(rows, key=lambda r: r["nfe"])
            ax.plot([r["nfe"] for r in rows], [r["fd_digits"] for r in rows], marker="o" if method != "dopri5" else "*", label=f"{name} {method}")
    ax.axhline(report[0]["floor"], color="grey", ls=":", label="floor")
    ax.set(xscale="log", yscale="log", xlabel="field evaluations per sample (NFE)", ylabel="FD-digits", title="FD-digits against the sampler's budget")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "fd_vs_nfe.png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="comma-separated run directories")
    parser.add_argument("--samplers", default="heun,pc", help="comma-separated, of heun, euler, sde, pc (dopri5 is always added)")
    parser.add_argument("--levels", default="4,6,9,12,18", help="comma-separated numbers of noise levels")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/fd-vs-nfe")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    levels = [int(k) for k in args.levels.split(",")]
    report = [score_run(r, args.samplers.split(","), levels, args.n, args.seed) for r in args.runs.split(",")]
    (out / "fd_vs_nfe.json").write_text(json.dumps(report, indent=1))
    plot(report, out)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
