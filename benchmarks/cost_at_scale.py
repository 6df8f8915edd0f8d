"""Cost of Flux Matching against denoising score matching at scale: step time and peak memory (prints JSON).

    python benchmarks/cost_at_scale.py [--device cpu] [--workloads ring,digits,cifar10] [--steps 10]
        [--repeats 5] [--cifar-batch 8] [--cifar-steps N] [--batch-sizes 128,256,...,8192]
        [--skip-memory] [--out FILE]

    e.g. on a 2-core CPU in about 10 minutes:
    python benchmarks/cost_at_scale.py --steps 5 --repeats 3 --cifar-steps 1 --out cost.json

For each workload, flux (the estimator :func:`fluxmatch.config.resolve` picks for the run) and
DSM train the same field (same initial weights) on the same batch size; the fields and objectives
are built from a resolved :class:`~fluxmatch.config.RunSpec` by ``build_field`` and
``build_objective``, as ``fluxmatch train`` builds them:

- ``ring``: the 2-D toy set at the points defaults (MLP 128-128, fixed σ = 0.2236), B = 512;
- ``digits``: the 8×8 digits, noise-annealed with the "digits" UNet (the images defaults), B = 128;
- ``cifar10``: the "cifar10" UNet preset (EDM's DDPM++ size) on random 3×32×32 images in [-1, 1]
  (the pixels do not change the cost), B = ``--cifar-batch``.

Step time: the median ms of a full optimizer step (objective forward, backward, Adam step; the
trainer's grad clipping and EMA are left out), flux and DSM alternating step by step (which of
the two goes first alternates too) for ``--steps`` × ``--repeats`` pairs after ``--warmup``
untimed steps, so that the noise of a shared machine hits both alike. ``step_ratio`` is the
median over back-to-back pairs of flux/DSM: compare the ratios, not the absolute times.

Peak memory: each (workload, objective) runs alone in a fresh spawned process. CUDA: the peak of
``torch.cuda.max_memory_allocated`` over ``torch.cuda.memory_allocated`` before the first step.
CPU: the peak resident set size over ``MEMORY_STEPS`` steps (VmHWM, reset through
/proc/self/clear_refs where the kernel allows, else ``ru_maxrss``) minus the RSS after building
the model, before the first step (nothing is warmed up first, so the Adam state and the
gradients count too).

Then the B-scaling of the flux reference: flux and DSM on the ring at each of ``--batch-sizes``
(fewer timed steps at large B), with their step time, peak memory and ratio.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context

import torch

from fluxmatch.config import PRESETS, DataSpec, ObjectiveSpec, RunSpec, resolve
from fluxmatch.data import DataSource
from fluxmatch.kinds import get_kind
from fluxmatch.run.build import build_field, build_objective
from image_throughput import SHAPES
from step_time import step_timer

OBJECTIVES = ("flux", "dsm")
WORKLOADS = ("ring", "digits", "cifar10")
CIFAR_ROWS = 256  # random images the cifar10 batches are drawn from
MEMORY_STEPS = 2  # steps the memory child runs: the first allocates Adam's state, the second runs its forward with it and the old gradients
MEMORY_NOTE = {
    "cpu": "peak RSS increase over the process's RSS after building the model, before the first step "
    "(a fresh spawned process per workload and objective running only that step loop; VmHWM, reset before the first step where the kernel allows)",
    "cuda": "peak torch.cuda.max_memory_allocated over torch.cuda.memory_allocated after building the model, before the first step "
    "(a fresh spawned process per workload and objective running only that step loop)",
}


def workload_spec(workload: str, objective: str, batch: int | None, device: str) -> RunSpec:
    """The resolved run spec of a workload: the data kind's defaults, ``objective`` and the batch."""
    o = ObjectiveSpec(name=objective)
    if workload == "cifar10":
        base = replace(PRESETS["cifar10"], objective=o)
    else:
        base = RunSpec(data=DataSpec("ring" if workload == "ring" else "digits"), objective=o)
    spec = resolve(replace(base, train=replace(base.train, device=device)))
    return replace(spec, train=replace(spec.train, batch_size=batch or spec.train.batch_size))


def workload_source(workload: str, spec: RunSpec) -> DataSource:
    """The data a workload trains on; cifar10: random images of CIFAR-10's shape in [-1, 1]."""
    if workload == "cifar10":
        gen = torch.Generator().manual_seed(0)
        return DataSource(torch.rand(CIFAR_ROWS, *SHAPES["cifar10"], generator=gen) * 2 - 1, "cifar10 (random)")
    return get_kind(spec.data.kind).load(spec.data, spec.train.seed)


def build(workload: str, objective: str, batch: int | None, device: torch.device):
    """(spec, timed step, parameter counts) of one workload and objective; the same seed for each
    objective, so that flux and DSM start from the same field."""
    spec = workload_spec(workload, objective, batch, device.type)
    source = workload_source(workload, spec)
    torch.manual_seed(spec.train.seed)
    field = build_field(spec, source).to(device)
    objective_module = build_objective(spec, field, source).to(device)
    step = step_timer(objective_module, field, source.data.to(device), spec.train.batch_size)
    # counted after step_timer: its param_groups call builds the flux potential matched to the field
    sizes = {"field": count(field), "objective": count(objective_module)}
    return spec, synced(step, device), sizes


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def synced(step, device: torch.device):
    """``step`` timed with the device synchronised before and after (CUDA); on CPU ``step`` itself."""
    if device.type != "cuda":
        return step

    def run() -> float:
        torch.cuda.synchronize(device)
        start = time.perf_counter()
        step()
        torch.cuda.synchronize(device)
        return time.perf_counter() - start

    return run


def interleaved_pairs(timers: dict, steps: int, repeats: int, warmup: int) -> dict:
    """Seconds per step of flux and DSM, one step of each in turn (which goes first alternates),
    ``steps`` pairs per repeat, after ``warmup`` untimed steps of each: {name: [s, ...]}, the
    i-th entries of the two lists timed back to back."""
    for _ in range(warmup):
        for step in timers.values():
            step()
    names = list(timers)
    times = {name: [] for name in names}
    for i in range(repeats * steps):
        for name in names if i % 2 == 0 else names[::-1]:
            times[name].append(timers[name]())
    return times


def summarise(times: dict) -> dict:
    """Median and fastest ms per step of each objective, and the flux/DSM ratio: the median of the
    ratios of back-to-back pairs (robust to slow drifts of the machine's speed) and the ratio of the medians."""
    out = {name: {"step_ms": round(1e3 * statistics.median(ts), 3), "step_ms_min": round(1e3 * min(ts), 3)} for name, ts in times.items()}
    out["step_ratio"] = round(statistics.median(f / d for f, d in zip(times["flux"], times["dsm"])), 3)
    out["step_ratio_of_medians"] = ratio(out["flux"]["step_ms"], out["dsm"]["step_ms"])
    return out


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            found = re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(found.group(1)) if found else None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_kib() -> int:
    hwm = _status_kib("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def memory_child(workload: str, objective: str, batch: int | None, device: str, threads: int) -> dict:
    """Runs in a fresh process: build the model, then the peak memory of ``MEMORY_STEPS`` steps (MiB)."""
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    dev = torch.device(device)
    _, step, _ = build(workload, objective, batch, dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
        for _ in range(MEMORY_STEPS):
            step()
        torch.cuda.synchronize(dev)
        return {"peak_mib": round((torch.cuda.max_memory_allocated(dev) - before) / 2**20, 2), "hwm_reset": True}
    before = _status_kib("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    reset = _reset_peak_rss()
    for _ in range(MEMORY_STEPS):
        step()
    return {"peak_mib": round((_peak_rss_kib() - before) / 1024, 2), "hwm_reset": reset, "rss_before_mib": round(before / 1024, 1)}


def peak_memory(workload: str, objective: str, batch: int | None, device: str, threads: int) -> dict:
    """``memory_child`` in a fresh spawned process (nothing else allocated there)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(memory_child, workload, objective, batch, device, threads).result()


def ratio(a, b):
    return round(a / b, 3) if a is not None and b else None


def measure_workload(name: str, batch: int | None, args, device: torch.device) -> dict:
    """Step time (interleaved) and peak memory of flux and DSM on one workload."""
    built = {obj: build(name, obj, batch, device) for obj in OBJECTIVES}
    spec, sizes = built["flux"][0], {obj: b[2] for obj, b in built.items()}
    steps = (args.cifar_steps or args.steps) if name == "cifar10" else args.steps
    log(f"{name}: B={spec.train.batch_size}, parameters {sizes}, flux estimator {spec.objective.estimator}; timing {steps} x {args.repeats} pairs...")
    timed = summarise(interleaved_pairs({obj: b[1] for obj, b in built.items()}, steps, args.repeats, args.warmup))
    del built
    out = {
        "batch": spec.train.batch_size,
        "field": spec.field.family if spec.field.family != "unet" else f"unet:{spec.field.preset}",
        "noise": spec.objective.noise,
        "flux_estimator": spec.objective.estimator,
        "timed_pairs": steps * args.repeats,
    }
    for obj in OBJECTIVES:
        out[obj] = {**timed[obj], "peak_mib": None, "parameters": sizes[obj]}
        if not args.skip_memory:
            log(f"{name}: peak memory of {obj}...")
            out[obj].update(peak_memory(name, obj, batch, args.device, args.threads))
    out["step_ratio"], out["step_ratio_of_medians"] = timed["step_ratio"], timed["step_ratio_of_medians"]
    out["memory_ratio"] = ratio(out["flux"]["peak_mib"], out["dsm"]["peak_mib"])
    log(f"{name}: flux {out['flux']['step_ms']} ms, dsm {out['dsm']['step_ms']} ms (ratio {out['step_ratio']}); memory ratio {out['memory_ratio']}")
    return out


def scaling_steps(batch: int, steps: int) -> int:
    """Timed pairs per repeat at batch ``batch``: ``steps`` up to B = 512, fewer above (at least 3)."""
    return min(steps, max(3, steps * 512 // batch))


def batch_scaling(args, device: torch.device) -> list[dict]:
    """Flux and DSM on the ring at each batch size: step time, peak memory, their ratio."""
    rows = []
    for b in args.batch_sizes:
        built = {obj: build("ring", obj, b, device) for obj in OBJECTIVES}
        steps = scaling_steps(b, args.steps)
        log(f"ring scaling: B={b}, {steps} steps x {args.repeats} repeats...")
        timed = summarise(interleaved_pairs({obj: v[1] for obj, v in built.items()}, steps, args.repeats, max(1, args.warmup)))
        del built
        ms = {obj: timed[obj]["step_ms"] for obj in OBJECTIVES}
        row = {"batch": b, "timed_pairs": steps * args.repeats, "flux_ms": ms["flux"], "dsm_ms": ms["dsm"], "ratio": timed["step_ratio"], "ratio_of_medians": timed["step_ratio_of_medians"]}
        for obj in OBJECTIVES:
            row[f"{obj}_mib"] = None if args.skip_memory else peak_memory("ring", obj, b, args.device, args.threads)["peak_mib"]
        row["memory_ratio"] = ratio(row["flux_mib"], row["dsm_mib"])
        log(f"ring scaling: B={b}: flux {ms['flux']} ms, dsm {ms['dsm']} ms (ratio {row['ratio']}), {row['flux_mib']} / {row['dsm_mib']} MiB")
        rows.append(row)
    return rows


def log(message: str) -> None:
    print(f"[cost_at_scale {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated, of " + ", ".join(WORKLOADS))
    parser.add_argument("--steps", type=int, default=10, help="timed steps of each objective per repeat (flux and DSM alternate step by step)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of --steps timed pairs")
    parser.add_argument("--cifar-steps", type=int, default=None, help="timed steps per repeat for cifar10 (default --steps; a CPU step takes seconds)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per objective before timing")
    parser.add_argument("--cifar-batch", type=int, default=8, help="batch of the cifar10 workload")
    parser.add_argument("--batch-sizes", default="128,256,512,1024,2048,4096,8192", help="ring batch sizes of the flux B-scaling ('' skips it)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--skip-memory", action="store_true", help="step times only")
    parser.add_argument("--out", default=None, help="also write the JSON to this file")
    args = parser.parse_args(argv)
    args.workloads = [w for w in args.workloads.split(",") if w]
    unknown = sorted(set(args.workloads) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}: expected some of {', '.join(WORKLOADS)}")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    if min([args.steps, args.repeats, args.cifar_batch, args.cifar_steps or 1, *args.batch_sizes]) < 1 or args.warmup < 0:
        parser.error("--steps, --cifar-steps, --repeats, --cifar-batch and --batch-sizes must be positive, --warmup non-negative")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    torch.set_flush_denormal(True)  # as the trainer does: denormal exps slow the B×B softmaxes
    device = torch.device(args.device)
    kind = "cuda" if device.type == "cuda" else "cpu"
    report = {
        "device": str(device) if kind == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})",
        "torch": torch.__version__,
        "threads": args.threads,
        "settings": {"steps": args.steps, "cifar_steps": args.cifar_steps or args.steps, "repeats": args.repeats, "warmup": args.warmup, "cifar_batch": args.cifar_batch, "memory_steps": MEMORY_STEPS},
        "step_ms": "median wall time of one optimizer step (objective forward, backward, Adam step), flux and DSM alternating step by step; "
        "step_ratio: median of flux/DSM over back-to-back pairs; step_ratio_of_medians: the ratio of the two medians",
        "peak_mib": None if args.skip_memory else MEMORY_NOTE[kind],
        "workloads": {},
    }
    for name in args.workloads:
        report["workloads"][name] = measure_workload(name, args.cifar_batch if name == "cifar10" else None, args, device)
    report["batch_scaling"] = batch_scaling(args, device)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
