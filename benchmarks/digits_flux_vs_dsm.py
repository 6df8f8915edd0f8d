"""Flux Matching vs denoising score matching on the digits images (prints JSON).

    python benchmarks/digits_flux_vs_dsm.py [--steps 6000] [--seeds 0] [--out runs/bench-digits]

Each (objective, seed) is one ``fluxmatch train --data digits`` run with the CLI defaults
(EDM-preconditioned UNet "digits" preset, noise-annealed objective with EDM's log-normal σ,
B = 128, Adam 1e-3 with cosine decay, EMA 0.999), sampled with EDM's Heun sampler (18 levels,
35 NFE). Reported: FD-digits (1000 samples against the 359 held-out digits) and its floor, class
coverage, NLL in bits/dim (200 held-out digits, PF-ODE), median step time and wall time; then
flux/DSM ratios of FD and step time.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

import fluxmatch as fm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the CLI's)")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", default="runs/bench-digits")
    args = parser.parse_args()
    torch.set_num_threads(2)
    report: dict = {"runs": [], "summary": {}}
    for objective in ("flux", "dsm"):
        rows = []
        for seed in (int(s) for s in args.seeds.split(",")):
            spec = fm.RunSpec(data=fm.DataSpec("digits"), objective=fm.ObjectiveSpec(name=objective), train=fm.TrainSpec(steps=args.steps, seed=seed))
            m = fm.train_run(spec, Path(args.out) / f"{objective}-{seed}", progress=False, overwrite=True)
            rows.append({
                "objective": objective, "seed": seed,
                **{k: m[k] for k in ("fd_digits", "fd_digits_floor", "class_coverage", "nll_bits_per_dim", "nll_bits_per_dim_se")},
                "median_step_ms": m["train"]["median_step_ms"], "wall_time_s": m["train"]["wall_time_s"], "nfe": m["sampler"]["nfe"],
            })
            print(json.dumps(rows[-1]), flush=True)
        report["runs"] += rows
        report["summary"][objective] = {k: statistics.mean(r[k] for r in rows) for k in ("fd_digits", "class_coverage", "nll_bits_per_dim", "median_step_ms", "wall_time_s")}
    flux, dsm = report["summary"]["flux"], report["summary"]["dsm"]
    report["summary"]["fd_ratio_flux_over_dsm"] = flux["fd_digits"] / dsm["fd_digits"]
    report["summary"]["step_time_ratio_flux_over_dsm"] = flux["median_step_ms"] / dsm["median_step_ms"]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
