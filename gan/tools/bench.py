"""`gan bench`: images/s of the training step, four ways, for the seed MLP and the default model.

What this module is: measurements of one model under (a) a bare PyTorch loop (the same
D and G updates and EMA, written inline: no trainer, no metrics, no seeding), (b) the
in-process loop `gan.train.loop.train_local` (again on one thread: `inprocess_1thread_...`),
(c) Ray Train with 1 worker (all CPUs) and (d) with 2 workers (CPUs split); (a) and (b) use
as many torch threads as CPUs. Every figure is steady state: the median of the per-epoch
images/s after the first epoch, timed inside the loop (inside the workers for Ray), so Ray's
start-up is excluded; it is reported on its own (`ray_init_s`: the local Ray start;
`ray_<n>_startup_s`: fit() called → first epoch started, i.e. worker processes, process
group, data). Beside them, `gan.tools.ddp_probe` runs the 2 ranks without Ray: their compute
with no gradient exchange (`ranks_2_nosync_images_per_s`) and the exchange alone
(`allreduce_ms_per_step`), so a Ray-2 figure below in-process says which of the two it lost to.
The data is the bundled digits, tiled to `images` samples; Ray runs use a
local temporary folder as storage (no S3 needed).

What it is not: no assertion on speed (tests never assert timings), no GPU (see
`gan.tools.gpu_check`).
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gan.core.config import DataConfig, ModelConfig, TrainConfig, resolve_configs
from gan.data.prepare import PreparedData, prepare_arrays
from gan.nets.models import build
from gan.tools.ddp_probe import probe
from gan.train import losses
from gan.train.loop import train_local
from gan.train.state import adam
from gan.train.steps import ema_update, make_ema, mode_seeking_term

BENCH_MODELS = ("seed", "default")  # PRESETS names: seed MLP (batch 128), default DCGAN (64)


@dataclass(frozen=True)
class BenchConfig:
    images: int = 4096  # training images per epoch (digits, tiled)
    epochs: int = 4  # the first is warm-up; images/s = median of the rest
    cpus: int = max(1, os.cpu_count() or 1)  # the whole machine, in every variant
    worker_counts: tuple[int, ...] = (1, 2)


def bench_data(images: int) -> PreparedData:
    """The bundled digits (28×28), tiled to exactly `images` training images."""
    base = prepare_arrays(DataConfig())
    reps = -(-images // len(base.y_train))
    x = base.x_train.repeat(reps, 1, 1, 1)[:images].contiguous()  # (images, 1, 28, 28)
    y = base.y_train.repeat(reps)[:images].contiguous()  # (images,)
    return PreparedData(x, y, base.x_holdout, base.y_holdout, num_classes=base.num_classes,
                        name="digits-bench", version=f"{base.version}-x{images}")


def bench_configs(preset: str, cfg: BenchConfig) -> tuple[ModelConfig, TrainConfig]:
    """The preset's model and batch size; epochs as asked; one checkpoint, at the end."""
    return resolve_configs(preset, train={"epochs": cfg.epochs, "checkpoint_every": cfg.epochs})


def steady(per_epoch: Sequence[float]) -> float:
    """Median images/s of the epochs after the first (the only one if there is one)."""
    rest = list(per_epoch[1:]) or list(per_epoch)
    return statistics.median(rest) if rest else float("nan")


# --------------------------------------------------------------------------- the four ways


def bare_loop(model_cfg: ModelConfig, train_cfg: TrainConfig, data: PreparedData
              ) -> list[float]:
    """Per-epoch images/s of a plain loop doing the same work as `gan.train.steps` (one D forward
    over real+fake, the G step reusing the fake batch, D frozen in it, the mode-seeking term
    when the recipe has one, EMA) and nothing else."""
    torch.manual_seed(train_cfg.seed)
    G, D = build(model_cfg)
    ema = make_ema(G) if train_cfg.ema_decay > 0 else None
    opt_g = adam(G, lr=train_cfg.lr_g, betas=train_cfg.betas_g)  # fused, as the trainer's
    opt_d = adam(D, lr=train_cfg.lr_d, betas=train_cfg.betas_d)
    x_all, y_all, b = data.x_train, data.y_train, train_cfg.batch_size
    out, n_updates = [], 0
    for _ in range(train_cfg.epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(y_all))
        for i in range(0, len(perm) - b + 1, b):
            idx = perm[i:i + b]
            x, y = x_all[idx], y_all[idx]  # (B, 1, 28, 28), (B,)
            z = torch.randn(b, model_cfg.latent_dim)  # (B, latent_dim)
            fake = G(z, y)  # (B, 1, 28, 28)
            logits = D(torch.cat([x, fake.detach()]), y.repeat(2))  # (2B,)
            loss_d = losses.d_loss(train_cfg.loss, logits[:b], logits[b:],
                                   real_label=train_cfg.real_label)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            D.requires_grad_(False)
            loss_g = losses.g_loss(train_cfg.loss, D(fake, y))
            if train_cfg.mode_seeking > 0:  # the default recipe's second G forward (MSGAN)
                loss_g = loss_g + train_cfg.mode_seeking * mode_seeking_term(G, fake, z, y)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            D.requires_grad_(True)
            if ema is not None:
                ema_update(ema, G, train_cfg.ema_decay, n_updates)
                n_updates += 1
        out.append((len(perm) // b) * b / (time.perf_counter() - t0))
    return out


def in_process(model_cfg: ModelConfig, train_cfg: TrainConfig, data: PreparedData
               ) -> list[float]:
    """Per-epoch images/s of `gan.train.loop.train_local` (metrics, divergence guard, seeding)."""
    seen: list[float] = []
    train_local(data, model_cfg, train_cfg, lambda m, _ckpt: seen.append(m["images_per_s"]))
    return seen


def on_ray(model_cfg: ModelConfig, train_cfg: TrainConfig, data: PreparedData, *,
           workers: int, cpus: int, root: str) -> tuple[list[float], float]:
    """(per-epoch global images/s measured inside the workers, start-up seconds) of a Ray
    Train run with `workers` workers sharing `cpus` CPUs; Ray must be initialised."""
    # lazy: `gan.tools.gpu_check` uses this module's data and statistics on GPU images that
    # may have neither Ray nor pyarrow.
    from pyarrow import fs as pafs

    from gan.train.ray.driver import run
    from gan.train.ray.worker import RunSpec

    tc = train_cfg.model_copy(update={"num_workers": workers,
                                      "cpus_per_worker": max(1, cpus // workers)})
    run_id = f"bench-{model_cfg.arch}-{workers}w-{int(time.time() * 1000)}"
    spec = RunSpec(run_id=run_id, model_cfg=model_cfg, train_cfg=tc, run_dir=f"{root}/{run_id}",
                   run_fs=pafs.LocalFileSystem(), data=data, echo=False)
    outcome = run(spec, storage_root=root)
    return [h["images_per_s"] for h in outcome.summary["history"]], outcome.startup_s


# --------------------------------------------------------------------------- the bench


def run_bench(models: Sequence[str] = BENCH_MODELS, cfg: BenchConfig | None = None,
              echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """One result dict per model (see the module docstring for what each figure means)."""
    from gan.train.ray.cluster import start_local, stop  # lazy: Ray, as in `on_ray`

    cfg = cfg or BenchConfig()
    data = bench_data(cfg.images)
    threads = torch.get_num_threads()
    results = []
    root = tempfile.mkdtemp(prefix="gan-bench-")
    session = None
    try:
        for name in models:
            model_cfg, train_cfg = bench_configs(name, cfg)
            r: dict[str, Any] = {"model": name, "arch": model_cfg.arch,
                                 "batch_size": train_cfg.batch_size, "images": cfg.images,
                                 "epochs": cfg.epochs, "cpus": cfg.cpus}
            torch.set_num_threads(cfg.cpus)  # the in-process variants use the whole machine
            echo(f"[{name}] bare PyTorch loop ...")
            r["bare_images_per_s"] = steady(bare_loop(model_cfg, train_cfg, data))
            echo(f"[{name}] in-process loop ...")
            r["inprocess_images_per_s"] = steady(in_process(model_cfg, train_cfg, data))
            if cfg.cpus > 1:
                # The same loop on one thread: on a busy machine OpenMP's multi-thread
                # barriers collapse (a descheduled thread stalls the others), which a set of
                # one-thread worker processes does not suffer; this figure shows it.
                torch.set_num_threads(1)
                echo(f"[{name}] in-process loop, 1 thread ...")
                r["inprocess_1thread_images_per_s"] = steady(
                    in_process(model_cfg, train_cfg, data))
            if (w := max(cfg.worker_counts)) > 1:
                echo(f"[{name}] {w} gloo ranks without Ray: no gradient exchange, then the "
                     "exchange alone ...")
                per_epoch, exchange_ms = probe(model_cfg, train_cfg, data, world=w,
                                               cpus=cfg.cpus)
                r[f"ranks_{w}_nosync_images_per_s"] = steady(per_epoch)
                r["allreduce_ms_per_step"] = exchange_ms
            if session is None:
                echo("starting a local Ray ...")
                session = start_local(num_cpus=cfg.cpus)
            for w in cfg.worker_counts:
                echo(f"[{name}] Ray Train, {w} worker(s) ...")
                per_epoch, startup = on_ray(model_cfg, train_cfg, data, workers=w,
                                            cpus=cfg.cpus, root=root)
                r[f"ray_{w}_images_per_s"] = steady(per_epoch)
                r[f"ray_{w}_startup_s"] = startup
            r["ray_init_s"] = session.init_s
            r["ray_startup_s"] = r.get(f"ray_{max(cfg.worker_counts)}_startup_s", float("nan"))
            r["inprocess_vs_bare"] = r["inprocess_images_per_s"] / r["bare_images_per_s"]
            if "ray_2_images_per_s" in r:
                r["ray_2_vs_inprocess"] = r["ray_2_images_per_s"] / r["inprocess_images_per_s"]
            if "ranks_2_nosync_images_per_s" in r:
                r["ranks_2_nosync_vs_inprocess"] = (r["ranks_2_nosync_images_per_s"]
                                                    / r["inprocess_images_per_s"])
            results.append(r)
    finally:
        torch.set_num_threads(threads)
        if session is not None:
            stop(session)
        shutil.rmtree(root, ignore_errors=True)
    return results


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of the figures (images/s and seconds)."""
    cols = ["model", "batch_size", "bare_images_per_s", "inprocess_images_per_s",
            "ray_1_images_per_s", "ray_2_images_per_s", "ranks_2_nosync_images_per_s",
            "allreduce_ms_per_step", "ray_init_s", "ray_startup_s", "orchestration_s"]
    head = ["model", "batch", "bare img/s", "in-process", "ray 1w", "ray 2w", "2 ranks no-sync",
            "allreduce ms/step", "ray init s", "ray start s", "orchestr. s"]
    rows = [head] + [[_fmt(r.get(c)) for c in cols] for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True))
                     for row in rows)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.1f}" if v < 100 else f"{v:.0f}"
    return "-" if v is None else str(v)
