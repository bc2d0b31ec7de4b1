"""The epoch loop: D/G steps, EMA, divergence guard, per-epoch metrics and a `report` callback.

What this module is: `run_epochs` (the loop the distributed layer calls on every rank,
with an injected batch source and `report(metrics, checkpoint)`), and `train_local`, the
in-process convenience (plain DataLoader) used by `gan bench` and the tests.
`python -m gan.train.loop --smoke` trains PRESETS["smoke"] on bundled digits in seconds.

What it is not: it imports no ray and knows nothing of S3 or MLflow; it writes no files
(checkpoints are bytes handed to `report`).

Determinism: weights come from `train_cfg.seed`; every epoch reseeds its latent/ε stream and
the global RNG (dropout) from (seed, epoch, rank) inside `torch.random.fork_rng`, and
`train_local` shuffles from (seed, epoch), so on CPU 2 epochs straight equal 1 epoch +
checkpoint + resume — without storing RNG states.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from gan.core.config import PRESETS, DataConfig, ModelConfig, TrainConfig, resolve_configs
from gan.data.prepare import PreparedData, prepare_arrays
from gan.nets.models import sample_latent
from gan.train.checkpoint import save_checkpoint
from gan.train.diffaug import parse_policy
from gan.train.schedule import apply_knobs, horizon_images, knobs_at
from gan.train.state import TrainState, make_state
from gan.train.steps import d_update, ema_update, g_update, generate, unwrap

ReportFn = Callable[[dict[str, Any], Callable[[], bytes] | None], None]
Batches = Callable[[int], Iterable[tuple[Tensor, Tensor]]]
SATURATED_REAL, SATURATED_FAKE = 0.99, 0.01  # mean σ(D(x)) above / σ(D(G(z))) below


class DivergenceError(RuntimeError):
    """Training diverged: a non-finite loss, or D saturated for `divergence_patience` steps."""

    def __init__(self, step: int, reason: str) -> None:
        super().__init__(f"training diverged at step {step}: {reason}")
        self.step, self.reason = step, reason


def epoch_seed(seed: int, epoch: int, stream: str | int = 0) -> int:
    """A 63-bit seed for (run seed, epoch, stream) — stream is the rank, or "data"."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


class _Meter:
    """Per-step metrics kept as device tensors, read back every `check_every` steps (one sync)
    to accumulate epoch means and run the divergence guard with exact step numbers."""

    def __init__(self, state: TrainState, cfg: TrainConfig, device: torch.device,
                 check_every: int) -> None:
        self.state, self.cfg, self.check_every = state, cfg, max(1, check_every)
        # Saturation only means something for σ-calibrated logits; a WGAN critic's scale is free.
        self.check_saturation = cfg.loss != "wgan-gp"
        # With one-sided smoothing D's optimum on real images is σ = real_label (0.9), not 1.
        self.real_threshold = (min(SATURATED_REAL, cfg.real_label - 0.05) if cfg.loss == "bce"
                               else SATURATED_REAL)
        self.zero = torch.zeros((), device=device)
        self.one = torch.ones((), device=device)
        self.rows: list[Tensor] = []
        self.steps: list[int] = []
        self.sums = {"loss_d": 0.0, "d_real": 0.0, "d_fake": 0.0, "gp": 0.0, "loss_g": 0.0,
                     "r1": 0.0, "r2": 0.0}
        self.n_d = self.n_g = 0

    def add(self, step: int, dm: dict[str, Tensor], gm: dict[str, Tensor] | None) -> None:
        g = gm["loss_g"] if gm else self.zero
        self.rows.append(torch.stack([dm["loss_d"], dm["d_real"], dm["d_fake"],
                                      dm.get("gp", self.zero), g, self.one if gm else self.zero,
                                      dm.get("r1", self.zero), dm.get("r2", self.zero)]))
        self.steps.append(step)
        if len(self.rows) >= self.check_every:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        values = torch.stack(self.rows).cpu().tolist()  # (k, 8): the one host sync
        steps, self.rows, self.steps = self.steps, [], []
        for step, (loss_d, d_real, d_fake, gp, loss_g, has_g, r1, r2) in zip(steps, values,
                                                                             strict=True):
            self._guard(step, loss_d, d_real, d_fake, loss_g if has_g else 0.0)
            for k, v in (("loss_d", loss_d), ("d_real", d_real), ("d_fake", d_fake), ("gp", gp),
                         ("r1", r1), ("r2", r2)):
                self.sums[k] += v
            self.n_d += 1
            if has_g:
                self.sums["loss_g"] += loss_g
                self.n_g += 1

    def _guard(self, step: int, loss_d: float, d_real: float, d_fake: float,
               loss_g: float) -> None:
        if not all(math.isfinite(v) for v in (loss_d, loss_g, d_real, d_fake)):
            raise DivergenceError(step, f"non-finite value (loss_d={loss_d}, loss_g={loss_g}, "
                                        f"d_real={d_real}, d_fake={d_fake})")
        if not self.check_saturation:
            return
        saturated = d_real > self.real_threshold and d_fake < SATURATED_FAKE
        self.state.saturated_run = self.state.saturated_run + 1 if saturated else 0
        if self.state.saturated_run >= self.cfg.divergence_patience:
            raise DivergenceError(
                step, f"D saturated for {self.state.saturated_run} consecutive steps "
                f"(d_real={d_real:.4f} > {self.real_threshold:g}, "
                f"d_fake={d_fake:.4f} < {SATURATED_FAKE})")

    def means(self) -> dict[str, float]:
        self.flush()
        out = {k: self.sums[k] / max(self.n_d, 1) for k in ("loss_d", "d_real", "d_fake")}
        out["loss_g"] = self.sums["loss_g"] / self.n_g if self.n_g else float("nan")
        if self.cfg.loss == "wgan-gp":
            out["gp"] = self.sums["gp"] / max(self.n_d, 1)
        if self.cfg.r1r2_gamma > 0:
            out["r1"], out["r2"] = (self.sums[k] / max(self.n_d, 1) for k in ("r1", "r2"))
        return out


def _lazy(gamma: float, every: int, step: int) -> float:
    """R1/R2's weight at this D step: γ·k on every k-th step, 0 between (lazy regularisation)."""
    return gamma * every if step % every == 0 else 0.0


def _run_epoch(state: TrainState, batches: Iterable[tuple[Tensor, Tensor]], cfg: TrainConfig,
               meter: _Meter, gen: torch.Generator, *, device: torch.device,
               autocast_dtype: torch.dtype | None, horizon: float | None = None) -> int:
    """One pass over `batches`; returns the number of real images this process consumed.
    `horizon`: the schedule's images (`gan.train.schedule`); lr, β2 and γ are set before each
    step from the global images so far (step × batch_size), so a resumed run continues it."""
    G, D = state.G, state.D
    latent_dim = unwrap(G).latent_dim
    augment = parse_policy(cfg.diffaugment)
    n_images = 0
    gamma = cfg.r1r2_gamma
    for x, y in batches:
        if horizon is not None:
            knobs = knobs_at(cfg, state.step * cfg.batch_size, horizon)
            apply_knobs(knobs, state.opt_g, state.opt_d)
            gamma = knobs.r1r2_gamma
        x = x.to(device, non_blocking=True)  # (B, C, H, W) in [-1, 1]
        y = y.to(device, non_blocking=True)  # (B,) int64
        z = sample_latent(x.shape[0], latent_dim, gen, device)  # (B, latent_dim)
        do_g = (state.step + 1) % cfg.d_steps == 0  # n D steps per G step
        # When a G step follows, one fake batch (with its graph) serves both steps, as in
        # pytorch/examples dcgan; otherwise the D step draws its fakes under no_grad.
        fake = generate(G, z, y, autocast_dtype) if do_g else None
        dm = d_update(G, D, state.opt_d, x, y, z, loss=cfg.loss, real_label=cfg.real_label,
                      gp_weight=cfg.gp_weight, fake=fake, rng=gen, autocast_dtype=autocast_dtype,
                      augment=augment, r1r2_gamma=_lazy(gamma, cfg.r1r2_every, state.step))
        gm = None
        if do_g:
            gm = g_update(G, D, state.opt_g, z, y, loss=cfg.loss, mode_seeking=cfg.mode_seeking,
                          fake=fake, autocast_dtype=autocast_dtype, rng=gen, augment=augment,
                          real=x)
            if state.G_ema is not None:
                ema_update(state.G_ema, G, cfg.ema_decay, state.ema_updates)
                state.ema_updates += 1
        state.step += 1
        meter.add(state.step, dm, gm)
        n_images += x.shape[0]
    return n_images


def run_epochs(
    state: TrainState, batches: Batches, train_cfg: TrainConfig, report: ReportFn | None = None, *,
    device: torch.device | str = "cpu", autocast_dtype: torch.dtype | None = None,
    is_chief: bool = True, dataset_version: str = "", rank: int = 0, check_every: int = 50,
    images_per_epoch: int | None = None,
) -> TrainState:
    """Train epochs state.epoch+1 … train_cfg.epochs; returns the (mutated) state.

    `batches(epoch)` yields (x (B, C, H, W) float in [-1, 1], y (B,) int64) for that epoch.
    `report(metrics, checkpoint)` is called once per epoch on every rank; `checkpoint` is a
    callable returning checkpoint bytes every `checkpoint_every` epochs and at the last epoch
    (on the chief only; None otherwise) — not calling it costs nothing.
    `images_per_epoch` (global: the train split's size) sets the horizon of a non-constant
    `train_cfg.schedule` when `schedule_kimg` is empty (`gan.train.schedule.horizon_images`).
    Raises DivergenceError (step and reason) when training diverges.
    """
    device = torch.device(device)
    horizon = horizon_images(train_cfg, images_per_epoch)
    state.train_cfg = train_cfg
    if dataset_version:
        state.dataset_version = dataset_version
    cuda = [device] if device.type == "cuda" else []
    for epoch in range(state.epoch + 1, train_cfg.epochs + 1):
        seed = epoch_seed(train_cfg.seed, epoch, rank)
        meter = _Meter(state, train_cfg, device, check_every)
        t0 = time.perf_counter()
        with torch.random.fork_rng(devices=cuda):
            torch.manual_seed(seed)  # dropout and anything else on the global RNG
            gen = torch.Generator(device=device).manual_seed(seed)  # z and ε
            state.G.train()
            state.D.train()
            n_images = _run_epoch(state, batches(epoch), train_cfg, meter, gen, device=device,
                                  autocast_dtype=autocast_dtype, horizon=horizon)
            means = meter.means()  # flushes: the device is in sync after this
        dt = time.perf_counter() - t0
        metrics: dict[str, Any] = {"epoch": epoch, "step": state.step, **means,
                                   "images_per_s": n_images / dt if dt > 0 else 0.0,
                                   "epoch_time_s": dt}
        state.epoch = epoch
        state.history.append(dict(metrics))
        if report is not None:
            due = epoch % train_cfg.checkpoint_every == 0 or epoch == train_cfg.epochs
            report(metrics, functools.partial(save_checkpoint, state) if is_chief and due else None)
    return state


# --------------------------------------------------------------------------- in-process


def _check_fits(data: PreparedData, model_cfg: ModelConfig) -> None:
    want = (model_cfg.channels, model_cfg.image_size, model_cfg.image_size)
    if tuple(data.image_shape) != want:
        raise ValueError(f"dataset {data.name} has images {tuple(data.image_shape)} but the model "
                         f"expects {want} (model.channels, model.image_size)")
    if model_cfg.conditional and data.num_classes > model_cfg.num_classes:
        raise ValueError(f"dataset {data.name} has {data.num_classes} classes but "
                         f"model.num_classes is {model_cfg.num_classes}")


def local_batches(x: Tensor, y: Tensor, train_cfg: TrainConfig, *, pin_memory: bool = False
                  ) -> Batches:
    """A batch source over in-memory tensors: shuffled from (seed, epoch), whole batches only
    (BatchNorm cannot take a batch of one) unless the data is smaller than one batch."""
    ds = TensorDataset(x, y)
    bs = train_cfg.batch_size

    def batches(epoch: int) -> Iterable[tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(epoch_seed(train_cfg.seed, epoch, "data"))
        # A BatchSampler as the sampler: the dataset is indexed once per batch, not per image.
        sampler = BatchSampler(RandomSampler(ds, generator=g), bs, drop_last=len(ds) >= bs)
        return DataLoader(ds, sampler=sampler, batch_size=None, pin_memory=pin_memory)

    return batches


def train_local(data: PreparedData, model_cfg: ModelConfig, train_cfg: TrainConfig,
                report: ReportFn | None = None, *, device: torch.device | str = "cpu",
                state: TrainState | None = None, autocast_dtype: torch.dtype | None = None,
                ) -> TrainState:
    """Train in this process on `data.x_train` (a fresh state, or `state` to continue one)."""
    _check_fits(data, model_cfg)
    device = torch.device(device)
    state = state or make_state(model_cfg, train_cfg, device)
    batches = local_batches(data.x_train, data.y_train, train_cfg,
                            pin_memory=device.type == "cuda")
    return run_epochs(state, batches, train_cfg, report, device=device,
                      autocast_dtype=autocast_dtype, dataset_version=data.version,
                      images_per_epoch=len(data.x_train))


def main(argv: list[str] | None = None) -> int:
    """`python -m gan.train.loop --smoke`: train on bundled digits, print per-epoch metrics."""
    ap = argparse.ArgumentParser(prog="python -m gan.train.loop", description=main.__doc__)
    ap.add_argument("--smoke", action="store_true", help="PRESETS['smoke']: tiny, one epoch")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="default")
    ap.add_argument("--epochs", type=int, default=None)
    args = ap.parse_args(argv)
    preset = "smoke" if args.smoke else args.preset
    data = prepare_arrays(DataConfig(**PRESETS[preset].get("data", {})))
    model_cfg, train_cfg = resolve_configs(
        preset, train={"epochs": args.epochs} if args.epochs else None)

    def report(metrics: dict[str, Any], checkpoint: Callable[[], bytes] | None) -> None:
        line = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}
        if checkpoint is not None:
            line["checkpoint_bytes"] = len(checkpoint())
        print(json.dumps(line), flush=True)

    t0 = time.perf_counter()
    train_local(data, model_cfg, train_cfg, report)
    print(json.dumps({"preset": preset, "dataset_version": data.version,
                      "n_train": len(data.y_train), "total_s": round(time.perf_counter() - t0, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
