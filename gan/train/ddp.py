"""Data-parallel plumbing for the GAN loop on any `torch.distributed` process group.

What this module is: the plain-PyTorch half of distributed training, used inside each Ray
Train worker (`gan.train.ray.worker`) and testable without Ray:
  * `per_worker_batch`: the global batch (`TrainConfig.batch_size`) split over the workers;
  * `sharded_batches`: a `DistributedSampler` (+ `set_epoch`) batch source, so W workers
    together see exactly the samples one worker sees per epoch;
  * `wrap_models`: G and D each in their own `DistributedDataParallel` (SyncBatchNorm on GPUs);
  * `all_sum`: one small all-reduce per epoch (sample count, time-limit vote);
  * `FaultSpec`: the test-only fault hook (kill a worker process for real);
  * `format_progress`: the one-line "epoch x/N" progress text.

What it is not: no Ray, no S3, no GAN math (see `gan.train.steps` / `gan.train.loop`).
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, TensorDataset

from gan.core.config import TrainConfig
from gan.train.loop import Batches
from gan.train.state import TrainState


def per_worker_batch(global_batch: int, world_size: int) -> int:
    """The batch each worker draws: `global_batch // world_size`, which must divide exactly."""
    if world_size < 1:
        raise ValueError(f"train.num_workers must be >= 1, got {world_size}")
    if global_batch % world_size:
        raise ValueError(
            f"train.batch_size {global_batch} is the global batch and must be divisible by "
            f"train.num_workers {world_size} (each worker draws batch_size // num_workers)")
    per = global_batch // world_size
    if per < 1:
        raise ValueError(f"train.batch_size {global_batch} < train.num_workers {world_size}: "
                         "each worker needs at least one image per batch")
    return per


def sharded_batches(x: Tensor, y: Tensor, train_cfg: TrainConfig, *, rank: int,
                    world_size: int, pin_memory: bool = False) -> Batches:
    """This rank's batches of x (N, C, H, W) / y (N,) for each epoch.

    The `DistributedSampler` shuffles from (seed, epoch) and gives every rank floor(N / W)
    disjoint samples; batches of batch_size // W are cut from them, whole batches only when the
    data holds at least one global batch (as `gan.train.loop.local_batches` does). Since
    floor(floor(N/W) / (B/W)) == floor(N/B), W workers see W · that many batches of B/W, i.e.
    the same number of samples per epoch as one worker.
    """
    per = per_worker_batch(train_cfg.batch_size, world_size)
    ds = TensorDataset(x, y)
    if len(ds) < world_size:
        raise ValueError(f"{len(ds)} training images cannot be split over {world_size} workers")
    sampler = DistributedSampler(ds, num_replicas=world_size, rank=rank, shuffle=True,
                                 seed=train_cfg.seed, drop_last=True)
    drop_last = len(ds) >= train_cfg.batch_size

    def batches(epoch: int) -> Iterable[tuple[Tensor, Tensor]]:
        sampler.set_epoch(epoch)  # a new permutation per epoch, the same on every rank
        # A BatchSampler as the sampler: the dataset is indexed once per batch, not per image.
        return DataLoader(ds, sampler=BatchSampler(sampler, per, drop_last=drop_last),
                          batch_size=None, pin_memory=pin_memory)

    return batches


def wrap_models(state: TrainState, device: torch.device, world_size: int) -> None:
    """Wrap G and D (in place) for `world_size` > 1 ranks; a single rank stays unwrapped.

    * Two DDP modules, not one: the D step and the G step each all-reduce only their own
      model's gradients (the G step runs D under `no_sync` with D frozen, see `gan.train.steps`).
    * SyncBatchNorm (CUDA only in PyTorch) so G's batch statistics cover the global batch;
      on CPU each rank normalises over its own B/W images.
    * `forward_sync_buffers=False`: buffers are broadcast from rank 0 once, at wrap time.
      Afterwards D's spectral-norm vectors evolve identically on every rank (same weights,
      deterministic power iteration) and G's BN running statistics are rank-local; rank 0 is
      the one that checkpoints. This saves a broadcast per forward.
    The optimisers keep working: conversion and wrapping reuse the same Parameter objects.
    """
    if world_size <= 1:
        return
    if device.type == "cuda":
        state.G = nn.SyncBatchNorm.convert_sync_batchnorm(state.G)
        state.D = nn.SyncBatchNorm.convert_sync_batchnorm(state.D)
    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    no_buffer_sync = _no_forward_buffer_sync()
    state.G = DistributedDataParallel(state.G, device_ids=ids, **no_buffer_sync)
    state.D = DistributedDataParallel(state.D, device_ids=ids, **no_buffer_sync)


def _no_forward_buffer_sync() -> dict[str, bool]:
    """DDP's switch for "no buffer broadcast per forward": `forward_sync_buffers=False` since
    torch 2.13 (which deprecates the old name), `broadcast_buffers=False` before (GPU images
    may carry an older torch than constraints.txt)."""
    params = inspect.signature(DistributedDataParallel.__init__).parameters
    key = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
    return {key: False}


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over all ranks (identity without a process group or with one rank)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)  # (k,)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


class CountingBatches:
    """Wraps a batch source; `.count` is the number of images yielded in the current epoch,
    `.started_at` the wall-clock time (time.time()) the first epoch began.
    `before_batch(epoch, i)` runs before batch i of each epoch (the fault hook's entry)."""

    def __init__(self, source: Batches, before_batch: Any = None) -> None:
        self.source, self.before_batch, self.count = source, before_batch, 0
        self.started_at: float | None = None

    def __call__(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        if self.started_at is None:
            self.started_at = time.time()
        self.count = 0
        for i, (x, y) in enumerate(self.source(epoch)):
            if self.before_batch is not None:
                self.before_batch(epoch, i)
            self.count += int(x.shape[0])
            yield x, y


# --------------------------------------------------------------------------- fault hook


@dataclass(frozen=True)
class FaultSpec:
    """Test-only: worker `rank` exits the process (`os._exit(1)`) in epoch `exit_at_epoch`,
    after its first batch, the first time only — `once_marker` (a local path or s3:// URI)
    is created when it fires, so the restarted worker group does not die again.
    `diverge_at_epoch` instead raises `DivergenceError` there (to test that path)."""

    rank: int
    once_marker: str
    exit_at_epoch: int | None = None
    diverge_at_epoch: int | None = None

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | FaultSpec | None) -> FaultSpec | None:
        if raw is None or isinstance(raw, FaultSpec):
            return raw
        known = {"rank", "once_marker", "exit_at_epoch", "diverge_at_epoch"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"fault: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        for key in ("rank", "once_marker"):
            if key not in raw:
                raise ValueError(f"fault: {key!r} is required (got {dict(raw)})")
        if (raw.get("exit_at_epoch") is None) == (raw.get("diverge_at_epoch") is None):
            raise ValueError("fault: give exactly one of 'exit_at_epoch' and 'diverge_at_epoch'")
        for key in ("rank", "exit_at_epoch", "diverge_at_epoch"):
            v = raw.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
                raise ValueError(f"fault: {key!r} must be a non-negative int, got {v!r}")
        if raw.get("exit_at_epoch") == 0 or raw.get("diverge_at_epoch") == 0:
            raise ValueError("fault: epochs count from 1")
        if not isinstance(raw["once_marker"], str) or not raw["once_marker"]:
            raise ValueError(f"fault: 'once_marker' must be a path or s3:// URI, "
                             f"got {raw['once_marker']!r}")
        return cls(rank=raw["rank"], once_marker=raw["once_marker"],
                   exit_at_epoch=raw.get("exit_at_epoch"),
                   diverge_at_epoch=raw.get("diverge_at_epoch"))

    def due(self, epoch: int, batch_index: int, rank: int) -> bool:
        """True at the fault's place: its rank, its epoch, after the first batch."""
        at = self.exit_at_epoch if self.exit_at_epoch is not None else self.diverge_at_epoch
        return rank == self.rank and epoch == at and batch_index == 1


# --------------------------------------------------------------------------- progress


def format_progress(metrics: Mapping[str, Any], total_epochs: int) -> str:
    """`epoch 3/10  loss_d 1.2345  loss_g 0.6789  d_real 0.612  d_fake 0.388  1234 img/s  2.1 s`."""
    def num(key: str, fmt: str) -> str:
        v = metrics.get(key)
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    parts = [f"epoch {int(metrics['epoch'])}/{total_epochs}",
             f"loss_d {num('loss_d', '.4f')}", f"loss_g {num('loss_g', '.4f')}",
             f"d_real {num('d_real', '.3f')}", f"d_fake {num('d_fake', '.3f')}",
             f"{num('images_per_s', '.0f')} img/s", f"{num('epoch_time_s', '.1f')} s"]
    if metrics.get("stopped_by_time_limit"):
        parts.append("(stopped by time limit)")
    return "  ".join(parts)
