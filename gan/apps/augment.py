"""Data augmentation with a conditional generator, and the evaluation that asks "does it help?".

What this module is:
  * `labelled_samples(G, k_per_class, seed)`: k generated images per class with their labels
    (the same draw `gan sample --n <k·classes> --npz` writes: labels 0,1,…,K-1,0,1,…).
  * `evaluate_augmentation`: for several seeds, take a small stratified real subset of the
    train split (e.g. 10 %), train the judge network (`gan.eval.judge.train_judge` — the same
    architecture and training function the evaluation uses, not a second classifier) on
        real          the subset alone
        real+gen      the subset plus k generated images per class
        gen           the generated images alone (how much the samples carry by themselves)
        full          the whole real train split (the reference a bigger real set reaches)
    and report holdout accuracy of each, mean ± std over the seeds.
    Fairness: `train_judge` runs whole epochs, so a bigger training set would also get more
    optimiser steps; each arm's epoch count is scaled so that every arm takes (about) the
    same number of steps as real+gen, and extra steps cannot pass for the samples' benefit.

What it is not: no CLI or tables (`gan.apps.studies.runs`), no registry calls (G is given).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor

from gan.apps.sampling import generate
from gan.data.prepare import PreparedData
from gan.eval.judge import train_judge
from gan.nets.models import Generator

JUDGE_BATCH = 64  # train_judge's default batch size: steps per epoch = ceil(n / 64)
MAX_JUDGE_EPOCHS = 200  # EvalConfig.judge_epochs' upper bound
ARMS = ("real", "real+gen", "gen", "full")


def labelled_samples(G: Generator, k_per_class: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """(x (k·K, C, H, W) in [-1, 1], y (k·K,) int64): k images of every class, seeded."""
    if not G.conditional:
        raise ValueError("augmentation needs a conditional generator (labelled samples); "
                         "this one is unconditional")
    if k_per_class < 1:
        raise ValueError(f"samples per class must be >= 1, got {k_per_class}")
    s = generate(G, k_per_class * G.num_classes, seed=seed)
    assert s.y is not None
    return s.x, s.y


def small_subset(y: Tensor, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a stratified `fraction` of labels y (at least one image per class)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    k = int(y.max()) + 1
    n = max(k, round(fraction * len(y)))
    idx, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y.numpy(),
                              random_state=seed)
    return np.sort(idx)


def matched_epochs(base_epochs: int, n_reference: int, n: int) -> int:
    """Epochs for n images so that steps ≈ base_epochs·ceil(n_reference / batch)."""
    steps = base_epochs * math.ceil(n_reference / JUDGE_BATCH)
    return max(1, min(MAX_JUDGE_EPOCHS, round(steps / math.ceil(n / JUDGE_BATCH))))


@dataclass(frozen=True, eq=False)
class AugmentResult:
    accuracy: dict[str, list[float]]  # arm → holdout accuracy per seed
    seeds: list[int]
    subset_idx: dict[int, np.ndarray]  # seed → indices of the real subset in the train split
    epochs: dict[str, int]  # arm → judge epochs (steps matched to real+gen)
    n_train: dict[str, int]  # arm → training images
    settings: dict[str, Any]

    def summary(self) -> dict[str, dict[str, float]]:
        """arm → {mean, std (sample std, ddof=1), min, max}."""
        out = {}
        for arm, accs in self.accuracy.items():
            a = np.asarray(accs)
            out[arm] = {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1
                        else 0.0, "min": float(a.min()), "max": float(a.max())}
        return out


def _with_train(data: PreparedData, x: Tensor, y: Tensor) -> PreparedData:
    return dataclasses.replace(data, x_train=x, y_train=y)


def evaluate_augmentation(data: PreparedData, G: Generator, *, fraction: float = 0.1,
                          k_per_class: int = 100, seeds: Sequence[int] = (0, 1, 2),
                          judge_epochs: int = 15, arms: Sequence[str] = ARMS,
                          on_run: Callable[[int, str, float], None] | None = None
                          ) -> AugmentResult:
    """Holdout accuracy of the judge trained with and without generated samples (see module)."""
    unknown = set(arms) - set(ARMS)
    if unknown or "real" not in arms or "real+gen" not in arms:
        raise ValueError(f"arms must include 'real' and 'real+gen', from {ARMS}; got {arms}")
    if len(seeds) < 1:
        raise ValueError("give at least one seed")
    if G.num_classes < data.num_classes:
        raise ValueError(f"generator has {G.num_classes} classes, dataset {data.num_classes}")
    acc: dict[str, list[float]] = {a: [] for a in arms}
    subsets, epochs, sizes = {}, {}, {}
    for seed in seeds:
        idx = small_subset(data.y_train, fraction, seed)
        subsets[seed] = idx
        xr, yr = data.x_train[idx], data.y_train[idx]
        xg, yg = labelled_samples(G, k_per_class, seed=seed)
        sets = {"real": (xr, yr), "real+gen": (torch.cat([xr, xg]), torch.cat([yr, yg])),
                "gen": (xg, yg), "full": (data.x_train, data.y_train)}
        n_ref = len(sets["real+gen"][0])
        for arm in arms:
            x, y = sets[arm]
            epochs[arm] = matched_epochs(judge_epochs, n_ref, len(x))
            sizes[arm] = len(x)
            judge = train_judge(_with_train(data, x, y), epochs[arm], seed=seed)
            acc[arm].append(judge.accuracy)
            if on_run is not None:
                on_run(seed, arm, judge.accuracy)
    return AugmentResult(accuracy=acc, seeds=list(seeds), subset_idx=subsets, epochs=epochs,
                         n_train=sizes, settings={
                             "fraction": fraction, "k_per_class": k_per_class,
                             "judge_epochs_real_gen": judge_epochs,
                             "n_holdout": len(data.y_holdout), "dataset": data.version})
