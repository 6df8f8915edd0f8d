"""Training throughput (images/s) of noise-annealed flux vs DSM at paper scale (prints JSON).

    python benchmarks/image_throughput.py [--preset cifar10] [--batch 128] [--steps 20] [--device cuda]

Random images of the preset's shape stand in for the data (throughput does not depend on the
pixels). Both objectives train the same EDM-preconditioned UNet for ``--steps`` timed steps
after 3 warm-up steps; flux and DSM alternate in blocks of 5 steps so that both see the same
machine state. Reported: images/s, ms/step, peak GPU memory, and the flux/DSM step-time ratio.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import fluxmatch as fm

SHAPES = {"digits": (1, 8, 8), "cifar10": (3, 32, 32), "celeba64": (3, 64, 64)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cifar10", choices=sorted(fm.UNET_PRESETS))
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="autocast the forward passes to bfloat16")
    args = parser.parse_args()
    device = torch.device(args.device)
    shape = SHAPES[args.preset]
    torch.manual_seed(0)
    setups = {}
    for name in ("flux", "dsm"):
        field = fm.EDMPreconditioned(fm.UNet(in_channels=shape[0], **fm.UNET_PRESETS[args.preset])).to(device)
        objective = (fm.FluxMatching(noise="edm", dim=shape[0] * shape[1] * shape[2]) if name == "flux" else fm.DenoisingScoreMatching(noise="edm")).to(device)
        groups = objective.param_groups(field, 1e-4)
        setups[name] = (field, objective, torch.optim.Adam(groups))
    x = torch.rand(args.batch, *shape, device=device) * 2 - 1
    times = {"flux": [], "dsm": []}

    def step(name):
        field, objective, opt = setups[name]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = objective(field, x).loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for name in setups:
        for _ in range(3):
            step(name)
    done = 0
    while done < args.steps:
        for name in setups:
            for _ in range(min(5, args.steps - done)):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                tick = time.perf_counter()
                step(name)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - tick)
        done += 5
    report = {"preset": args.preset, "batch": args.batch, "device": str(device), "bf16": args.bf16,
              "parameters": sum(p.numel() for p in setups["dsm"][0].parameters())}
    for name, ts in times.items():
        ts = sorted(ts)
        median = ts[len(ts) // 2]
        report[name] = {"ms_per_step": round(1e3 * median, 2), "images_per_s": round(args.batch / median, 1)}
    report["step_time_ratio_flux_over_dsm"] = round(report["flux"]["ms_per_step"] / report["dsm"]["ms_per_step"], 3)
    if device.type == "cuda":
        report["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
