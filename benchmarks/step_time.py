"""Training-step time of Flux Matching vs denoising score matching (prints JSON).

    python benchmarks/step_time.py [--repeats 60] [--threads 2]

Measures the median wall time of one full optimizer step (objective, backward, Adam) with the
same MLP and batch for both objectives, interleaving the two so that machine noise hits both
alike, and reports ratios measured within this one run:
- ring (2-D), MLP 2→128→128→2, B = 512;
- scikit-learn digits as 64-D vectors (scaled to [0, 1]), MLP 64→256→256→64, B = 256;
- flux step time on the ring at B = 128, 512, 2048 and the growth exponent from 512 to 2048.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import torch

from fluxmatch import DenoisingScoreMatching, FluxMatching, MLPField
from fluxmatch.data import sample_toy


def digits() -> torch.Tensor:
    from sklearn.datasets import load_digits

    return torch.tensor(load_digits().data, dtype=torch.float32) / 16.0


def step_timer(objective, field, data: torch.Tensor, batch: int):
    opt = torch.optim.Adam(objective.param_groups(field, 1e-3))
    gen = torch.Generator().manual_seed(0)

    def step() -> float:
        x = data[torch.randint(len(data), (batch,), generator=gen)]
        start = time.perf_counter()
        loss = objective(field, x).loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return time.perf_counter() - start

    return step


def interleaved_medians(timers: dict, repeats: int, warmup: int) -> dict:
    """Median ms of each timer, the timers run in turn so that machine noise hits all alike."""
    times = {k: [] for k in timers}
    for i in range(warmup + repeats):
        for name, step in timers.items():
            t = step()
            if i >= warmup:
                times[name].append(t)
    return {k: round(1e3 * statistics.median(v), 3) for k, v in times.items()}


def compare(data, dim, hidden, batch, sigma, repeats, warmup=10):
    """Median ms per step for flux and DSM."""
    torch.manual_seed(0)
    timers = {
        "flux": step_timer(FluxMatching(sigma=sigma, dim=dim), MLPField(dim, hidden), data, batch),
        "dsm": step_timer(DenoisingScoreMatching(sigma=sigma), MLPField(dim, hidden), data, batch),
    }
    out = {f"{k}_ms": v for k, v in interleaved_medians(timers, repeats, warmup).items()}
    out["flux_over_dsm"] = round(out["flux_ms"] / out["dsm_ms"], 2)
    return out


def batch_scaling(data, batches, sigma, repeats, warmup=5):
    torch.manual_seed(0)
    timers = {str(b): step_timer(FluxMatching(sigma=sigma, dim=2), MLPField(2, (128, 128)), data, b) for b in batches}
    ms = interleaved_medians(timers, repeats, warmup)
    exponent = math.log(float(ms["2048"]) / float(ms["512"])) / math.log(4)
    return {"flux_ms_by_batch": ms, "growth_exponent_512_to_2048": round(exponent, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the trainer does: denormal exps slow the B×B softmaxes
    ring = sample_toy("ring", 20000, torch.Generator().manual_seed(0))
    report = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "ring_b512": compare(ring, 2, (128, 128), 512, 0.2236, args.repeats),
        "digits64_b256": compare(digits(), 64, (256, 256), 256, 0.2236, args.repeats),
        "ring_batch_scaling": batch_scaling(ring, (128, 512, 2048), 0.2236, max(10, args.repeats // 3)),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
