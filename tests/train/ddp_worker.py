"""One rank of the two-process training step that tests/train/test_distributed.py checks.

Run as ``python -m torch.distributed.run --nproc_per_node 2 ddp_worker.py OUT``: every rank builds
the same field and objective and trains a one-step run into OUT/dsm, then one into OUT/flux.
"""

from __future__ import annotations

import sys

SEED, BATCH, SIGMA = 3, 64, 0.2236


def build(name: str):
    import torch

    from fluxmatch import DenoisingScoreMatching, FluxMatching, MLPField

    torch.manual_seed(SEED)
    field = MLPField(2, (32, 32))
    objective = FluxMatching(SIGMA, dim=2) if name == "flux" else DenoisingScoreMatching(SIGMA)
    return field, objective


def config(steps: int = 1):
    from fluxmatch.train import TrainConfig

    return TrainConfig(steps=steps, batch_size=BATCH, lr=1e-2, lr_schedule="constant", seed=SEED, progress=False, checkpoint_every=steps, log_every=1)


def main(out: str) -> None:
    import torch
    import torch.distributed as dist

    from fluxmatch import DataSource
    from fluxmatch.train import Trainer

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        for name in ("dsm", "flux"):
            field, objective = build(name)
            Trainer(field, objective, DataSource.from_spec("ring", SEED), config(), f"{out}/{name}").fit()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
