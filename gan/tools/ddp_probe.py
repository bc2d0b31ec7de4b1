"""`gan bench`'s look inside CPU data parallelism: where Ray Train's 2 workers lose to one process.

What this module is: `probe`, which starts the same ranks Ray Train's CPU workers are (W
processes, CPUs split between them, gloo on loopback) without Ray, and measures
  * the images/s of the loop trained on each rank's shard with NO gradient
    exchange (models unwrapped): the compute ceiling of W ranks on this machine;
  * the milliseconds of one all-reduce of D's and one of G's gradient sizes, i.e. what
    one training step exchanges, timed alone (median of 20 after 3 warm-up).
Ray 2 workers ÷ in-process is then explained as compute (nosync ÷ in-process) times exchange.

What it is not: a trainer (the no-sync ranks' models drift apart: the figure is speed only),
and no Ray (see `gan.tools.bench.on_ray` for the real thing).
"""

from __future__ import annotations

import os
import queue
import statistics
import time
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gan.core.config import ModelConfig, TrainConfig
from gan.data.prepare import PreparedData
from gan.stack import procs

WARMUP, REPEATS = 3, 20
PROBE_TIMEOUT_S = 900.0  # a rank that died leaves the other blocked: give up and say so


def probe(model_cfg: ModelConfig, train_cfg: TrainConfig, data: PreparedData, *, world: int,
          cpus: int) -> tuple[list[float], float]:
    """(per-epoch global images/s of `world` ranks with no gradient exchange, ms of one step's
    exchange alone); `gan.tools.bench` reports them as `ranks_<world>_nosync_images_per_s`
    (steady state) and `allreduce_ms_per_step`."""
    ctx = mp.get_context("spawn")  # fresh interpreters, as Ray's workers are
    results: Any = ctx.Queue()
    port = procs.free_port()
    threads = max(1, cpus // world)
    ranks = [ctx.Process(target=_rank, args=(rank, world, port, threads, model_cfg, train_cfg,
                                             data, results), daemon=True)
             for rank in range(world)]
    for p in ranks:
        p.start()
    try:
        out: tuple[list[float], float] = results.get(timeout=PROBE_TIMEOUT_S)
    except queue.Empty:
        codes = [p.exitcode for p in ranks]
        raise RuntimeError(f"the data-parallel probe got no result in {PROBE_TIMEOUT_S:.0f} s "
                           f"(rank exit codes {codes})") from None
    finally:
        for p in ranks:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return out


def _rank(rank: int, world: int, port: int, threads: int, model_cfg: ModelConfig,
          train_cfg: TrainConfig, data: PreparedData, results: Any) -> None:
    # Imports inside: this runs in a spawned interpreter.
    from gan.train.ddp import sharded_batches
    from gan.train.loop import run_epochs
    from gan.train.state import make_state

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        tc = train_cfg.model_copy(update={"num_workers": world, "cpus_per_worker": threads})
        state = make_state(model_cfg, tc)  # not wrapped: no gradient exchange at all
        sizes = [sum(p.numel() for p in m.parameters()) for m in (state.D, state.G)]
        source = sharded_batches(data.x_train, data.y_train, tc, rank=rank, world_size=world)
        per_epoch: list[float] = []
        run_epochs(state, source, tc, lambda m, _c: per_epoch.append(m["images_per_s"]),
                   rank=rank)
        dist.barrier()
        exchange_ms = _allreduce_ms(sizes)
        if rank == 0:  # every rank did its shard in about the same time: W × rank 0's rate
            results.put(([world * v for v in per_epoch], exchange_ms))
    finally:
        dist.destroy_process_group()


def _allreduce_ms(sizes: list[int]) -> float:
    """Median ms of one step's exchange: an all-reduce of each size (float32 gradients)."""
    grads = [torch.zeros(n) for n in sizes]  # (n,) each: D's then G's gradients, flat
    times = []
    for i in range(WARMUP + REPEATS):
        t0 = time.perf_counter()
        for g in grads:
            dist.all_reduce(g)
        if i >= WARMUP:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)
