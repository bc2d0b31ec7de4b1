"""Training for a wall-clock budget: whole epochs until the time is spent, and budget ↔ epochs.

What this module is: `train_for_budget` (`gan.train.loop.train_local`, stopped after the first
epoch that ends past a wall-clock budget: whole epochs only, so the state stays consistent),
`epochs_for_budget` (how many epochs a budget buys at a measured images/s) and
`images_trained` (the images a training history went through, for such rates).
Used by the recipe runner (`gan.tools.recipes`) and the demo generator
(`gan.apps.studies.demo_models`).

What it is not: no timing of single steps (`gan.tools.bench`), no storage.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from gan.core.config import ModelConfig, TrainConfig
from gan.data.prepare import PreparedData
from gan.train.loop import ReportFn, train_local
from gan.train.state import TrainState, make_state

MAX_BUDGET_EPOCHS = 10_000  # the epoch cap of a budget-only run (no epochs asked for)


def train_for_budget(data: PreparedData, model_cfg: ModelConfig, train_cfg: TrainConfig,
                     report: ReportFn | None = None, *, time_budget_s: float | None = None,
                     state: TrainState | None = None) -> TrainState:
    """`train_local` for `train_cfg.epochs` epochs, or fewer: with `time_budget_s`, one epoch
    per call while the budget is not spent, i.e. it stops after the first epoch that ends past
    `time_budget_s` seconds (counted from this call; at least one epoch is run). `state`
    continues a given state (a fresh one otherwise); its `train_cfg.epochs` then says how many
    epochs were run."""
    state = state or make_state(model_cfg, train_cfg)
    if time_budget_s is None:
        return train_local(data, model_cfg, train_cfg, report, state=state)
    if train_cfg.schedule != "constant" and train_cfg.schedule_kimg is None:
        # One call per epoch below: "epochs × train images" would be one epoch's images.
        raise ValueError(f"train.schedule {train_cfg.schedule!r} with a wall-clock budget "
                         "needs train.schedule_kimg (e.g. images/s × budget / 1000)")
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < time_budget_s and state.epoch < train_cfg.epochs:
        step_cfg = train_cfg.model_copy(update={"epochs": state.epoch + 1})
        train_local(data, model_cfg, step_cfg, report, state=state)
    return state


def epochs_for_budget(budget_s: float, images_per_s: float, n_train: int, batch_size: int) -> int:
    """Whole epochs that fit `budget_s` at `images_per_s` (at least 1); whole batches only."""
    per_epoch = max(n_train // batch_size, 1) * min(batch_size, n_train)
    if not (images_per_s > 0 and budget_s > 0):
        raise ValueError(f"budget_s {budget_s} and images_per_s {images_per_s} must be > 0")
    return max(1, int(budget_s * images_per_s // per_epoch))


def images_trained(history: Iterable[Mapping[str, Any]]) -> float:
    """Images the epochs of a training history went through (rate × time per epoch)."""
    return sum(h["images_per_s"] * h["epoch_time_s"] for h in history)
