"""Generators for the applications' evaluations: trained in-process, saved as MLflow models.

What this module is:
  * `save_model_dir(path, state)`: a trained `TrainState` → a local MLflow-format model directory
    (the same pyfunc bundle `gan.registry.publish` logs: EMA generator + discriminator,
    safetensors), so
    `gan.registry.load.load_generator(<dir>)` works without a tracking server.
  * `train_demo_generator(out_dir, ...)`: a conditional generator on the bundled digits with
    `PRESETS["default"]`, for the augmentation and inpainting evaluations
    (`python -m gan.apps.studies.demo_models OUT_DIR`).
  * `tiny_recipe()`: a DCGAN small enough for tests (seconds).

What it is not: no evaluation (`gan.apps.studies.runs`), no registry server calls.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from gan.core.config import DataConfig, ModelConfig, TrainConfig, resolve_configs
from gan.data.prepare import prepare_arrays
from gan.train.budget import train_for_budget
from gan.train.state import TrainState
from gan.train.steps import unwrap


def save_model_dir(path: str | Path, state: TrainState, *, meta: dict[str, Any] | None = None
                   ) -> Path:
    """Write `state`'s published generator (EMA when kept) and D as an MLflow pyfunc model."""
    from gan.registry import model_format as mm  # lazy: gan.registry loads MLflow (≈2 s)

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists: choose a new model directory")
    cfg = state.model_cfg
    info = {"epochs": state.epoch, "dataset_version": state.dataset_version, **(meta or {})}
    with tempfile.TemporaryDirectory(prefix="gan-bundle-") as tmp:
        bundle = mm.write_bundle(Path(tmp) / "gan_generator", cfg, state.generator,
                                 unwrap(state.D), meta=info)
        mm.save_bundle_model(path, bundle, metadata=info)
    return path


def tiny_recipe(conditional: bool = True, epochs: int = 3, seed: int = 0
                ) -> tuple[ModelConfig, TrainConfig]:
    """A very small DCGAN recipe (seconds on CPU) for tests and smoke runs of the applications."""
    return resolve_configs(
        "default",
        model={"conditional": conditional, "base_channels": 8, "latent_dim": 16},
        train={"epochs": epochs, "batch_size": 32, "ema_decay": 0.9, "seed": seed,
               "mode_seeking": 0.0,  # pinned: the tests' thresholds were measured without it
               "checkpoint_every": max(1, epochs)})


def train_demo_generator(out_dir: str | Path, *, epochs: int | None = None,
                         time_budget_s: float | None = None, seed: int = 0,
                         data_cfg: DataConfig | None = None,
                         on_epoch: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Conditional DCGAN (`PRESETS["default"]`, its epochs unless `epochs` is given) on digits
    → MLflow model dir `out_dir`."""
    data = prepare_arrays(data_cfg or DataConfig())
    over: dict[str, Any] = {"seed": seed} | ({} if epochs is None else {"epochs": epochs})
    model_cfg, train_cfg = resolve_configs("default", train=over)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        state = train_for_budget(data, model_cfg, train_cfg,
                                 None if on_epoch is None else lambda m, _ck: on_epoch(m),
                                 time_budget_s=time_budget_s)
    return save_model_dir(out_dir, state, meta={
        "preset": "default", "epochs_planned": train_cfg.epochs,
        "train_seconds": round(time.perf_counter() - t0, 1), "dataset": data.name})


def main(argv: list[str] | None = None) -> int:
    """`python -m gan.apps.studies.demo_models OUT_DIR [--epochs N] [--budget S] [--threads T]`:
    train the demo generator (`PRESETS["default"]`) and save it as an MLflow model directory."""
    ap = argparse.ArgumentParser(prog="python -m gan.apps.studies.demo_models",
                                 description=main.__doc__)
    ap.add_argument("out_dir", help="new MLflow model directory to write")
    ap.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    ap.add_argument("--budget", type=float, default=None,
                    help="wall-clock seconds (whole epochs); default: none")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    def echo(m: dict[str, Any]) -> None:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()}),
              flush=True)

    path = train_demo_generator(args.out_dir, epochs=args.epochs, time_budget_s=args.budget,
                                seed=args.seed, on_epoch=echo)
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
