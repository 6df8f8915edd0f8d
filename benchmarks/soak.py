"""Soak test: resident memory (RSS) over long training runs, to catch leaks (prints JSON).

    python benchmarks/soak.py [--steps-ring 20000] [--steps-digits 2000] [--only ring|digits]
                              [--threads 2] [--quick] [--out soak.json]

Trains, through the public run pipeline (``fluxmatch.run.fit`` on a preset spec), each into a
fresh temporary directory:
- ring: the default fixed-σ Flux Matching run (``--data ring``: MLP 128-128, B = 512), 20,000 steps;
- digits: the default noise-annealed flux run on scikit-learn's 8×8 digits (EDM-preconditioned
  UNet, B = 128), 2,000 steps.

A background thread samples the process's RSS (VmRSS of /proc/self/status) every 0.5 s together
with the last step written to the run's log.csv (one row every 50 steps, or every steps/20 on
short runs); the RSS is sampled once more when training returns. Per run it prints one JSON object:
steps, wall time, median ms/step, RSS at the start (the first sample at or past step 50, once the
allocator has warmed up), at the end and the largest, the growth end − start (MB and % of start),
the least-squares slope of RSS against step over the second half of the run (MB per 1000 steps),
a trace of RSS at every 5% of the steps, the same start, end and growth of the anonymous part
(RssAnon, what a leak grows), and ``bounded``: both growths < max(50 MB, 10% of start).
``--quick`` (2,000 ring and 200 digits steps) is a smoke check. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from fluxmatch.config import preset, resolve, with_options
from fluxmatch.run import fit

WARMUP_STEPS = 50
SAMPLE_EVERY_S = 0.5


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory in MB: ``VmRSS`` (everything resident) or ``RssAnon``
    (anonymous memory only: what a leak grows; file-backed pages come and go with the page cache)."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    raise RuntimeError(f"no {field} in /proc/self/status (this benchmark needs Linux)")


def last_logged_step(log: Path) -> int:
    """The step of the last complete row of log.csv (0 before the first row)."""
    try:
        text = log.read_text()
    except OSError:
        return 0
    lines = text.split("\n")[:-1]  # only lines ended by a newline are complete
    for line in reversed(lines[1:]):  # skip the header
        head = line.split(",", 1)[0]
        try:
            return int(float(head))
        except ValueError:
            continue
    return 0


class RSSSampler(threading.Thread):
    """Samples (seconds since start, last logged step, RSS MB) every ``every`` seconds."""

    def __init__(self, log: Path, steps: int, name: str, every: float = SAMPLE_EVERY_S) -> None:
        super().__init__(daemon=True)
        self.log, self.steps, self.label, self.every = log, steps, name, every
        self.samples: list[tuple[float, int, float]] = []
        self.anon: list[float] = []
        self.stop = threading.Event()
        self.began = time.perf_counter()

    def sample(self, step: int | None = None) -> None:
        step = last_logged_step(self.log) if step is None else step
        self.samples.append((time.perf_counter() - self.began, step, rss_mb()))
        self.anon.append(rss_mb("RssAnon"))

    def run(self) -> None:
        next_report = max(1, self.steps // 20)
        while not self.stop.wait(self.every):
            self.sample()
            step, rss = self.samples[-1][1], self.samples[-1][2]
            if step >= next_report:
                print(f"[soak {self.label}] step {step}/{self.steps}  rss {rss:.1f} MB  {self.samples[-1][0]:.0f} s", file=sys.stderr, flush=True)
                while next_report <= step:
                    next_report += max(1, self.steps // 20)


def slope_per_1000(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of RSS (MB) against step, in MB per 1000 steps."""
    if len({s for s, _ in points}) < 2:
        return None
    n = len(points)
    mean_s = sum(s for s, _ in points) / n
    mean_r = sum(r for _, r in points) / n
    sxx = sum((s - mean_s) ** 2 for s, _ in points)
    sxy = sum((s - mean_s) * (r - mean_r) for s, r in points)
    return 1000.0 * sxy / sxx


def trace(samples: list[tuple[float, int, float]], steps: int) -> dict[str, float]:
    """{step: rss MB} at every 5% of the steps: the first sample at or past each mark."""
    out = {}
    for mark in (round(steps * k / 20) for k in range(1, 21)):
        hit = next(((s, r) for _, s, r in samples if s >= mark), None)
        if hit is not None:
            out.setdefault(str(hit[0]), round(hit[1], 1))
    return out


def soak(name: str, steps: int) -> dict:
    """Train the ``name`` preset for ``steps`` steps in a fresh temporary directory, sampling RSS."""
    spec = with_options(preset(name), {"steps": steps})
    gc.collect()
    before = rss_mb()
    with tempfile.TemporaryDirectory(prefix=f"soak-{name}-") as tmp:
        out = Path(tmp) / name
        sampler = RSSSampler(out / "log.csv", steps, name)
        print(f"[soak {name}] training {steps} steps in {out}", file=sys.stderr, flush=True)
        tick = time.perf_counter()
        sampler.start()
        try:
            summary = fit(spec, out, progress=False)["summary"]
        finally:
            sampler.stop.set()
            sampler.join()
        total_s = time.perf_counter() - tick
        sampler.sample(step=steps)  # the end: training has returned (last checkpoint written)
    samples = sampler.samples
    first = next(i for i, (_, s, _) in enumerate(samples) if s >= min(WARMUP_STEPS, steps))
    anon_growth = sampler.anon[-1] - sampler.anon[first]
    warm = [(s, r) for _, s, r in samples if s >= min(WARMUP_STEPS, steps)]
    start_step, start = warm[0]
    end = samples[-1][2]
    growth = end - start
    second_half = [(s, r) for s, r in warm if s >= steps / 2]
    slope = slope_per_1000(second_half)
    return {
        "run": name,
        "steps": summary["steps"],
        "batch_size": resolve(spec).train.batch_size,
        "wall_time_s": summary["wall_time_s"],
        "total_time_s": round(total_s, 1),
        "median_step_ms": summary["median_step_ms"],
        "rss_mb_before": round(before, 1),
        "rss_mb_start": round(start, 1),
        "start_step": start_step,
        "rss_mb_end": round(end, 1),
        "rss_mb_max": round(max(r for _, _, r in samples), 1),
        "growth_mb": round(growth, 1),
        "growth_pct": round(100.0 * growth / start, 2),
        "slope_mb_per_1000_steps_second_half": None if slope is None else round(slope, 3),
        "rss_anon_mb_start": round(sampler.anon[first], 1),
        "rss_anon_mb_end": round(sampler.anon[-1], 1),
        "rss_anon_growth_mb": round(anon_growth, 1),
        "samples": len(samples),
        "rss_trace_every_5pct": trace(samples, steps),
        "bounded": max(growth, anon_growth) < max(50.0, 0.1 * start),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps-ring", type=int, default=None, help="ring steps (default 20000; 2000 with --quick)")
    parser.add_argument("--steps-digits", type=int, default=None, help="digits steps (default 2000; 200 with --quick)")
    parser.add_argument("--only", choices=("ring", "digits"), default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a smoke check: 2000 ring and 200 digits steps")
    parser.add_argument("--out", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = {
        "ring": args.steps_ring if args.steps_ring is not None else (2000 if args.quick else 20000),
        "digits": args.steps_digits if args.steps_digits is not None else (200 if args.quick else 2000),
    }
    runs = [args.only] if args.only else ["ring", "digits"]
    header = {"torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine()}
    results = {}
    for name in runs:
        result = {**soak(name, steps[name]), **header}
        results[name] = result
        print(json.dumps(result, indent=2), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps({**header, "runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
