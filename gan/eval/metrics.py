"""Sample-quality metrics in the judge's feature space: FID, KID, IS, PRDC and class statistics.

What this module is: thin, seeded wrappers around maintained implementations —
torchmetrics' `FrechetInceptionDistance`, `KernelInceptionDistance` and `InceptionScore` with the
judge as their custom `feature` module, and the `prdc` package (Kynkäänniemi et al. 2019
precision/recall with k=3; Naeem et al. 2020 density/coverage with k=5) — plus the judge's class
histogram, classes covered and KL(real classes ‖ generated classes).

What it is not: it samples no generator, trains no judge, knows no storage. Inputs are image
tensors (N, C, H, W) in [-1, 1] or feature arrays; outputs are plain floats.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator

import numpy as np
import prdc
import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

PR_K = 3  # Kynkäänniemi et al. 2019 use k=3 for improved precision/recall
DC_K = 5  # Naeem et al. 2020 recommend k=5 for density/coverage
KL_EPS = 1e-6  # an empty generated class costs p·log(p/1e-6): large but finite


def _feed(update: object, images: Tensor, batch_size: int, **kw: object) -> None:
    for batch in images.split(batch_size):
        update(batch, **kw)  # type: ignore[operator]


@contextlib.contextmanager
def _keeps_features() -> Iterator[None]:
    # KID and IS warn on construction that they keep every feature; intended here (n ≤ 1e5, F=64).
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        yield


def fid(feature: nn.Module, real: Tensor, fake: Tensor, batch_size: int = 500) -> float:
    """FID between `real` and `fake` images (N, C, H, W) in the space of `feature`.

    `feature` must return (B, F) and carry `num_features`; torchmetrics then passes our float
    images through unchanged (its `normalize` flag only rescales inputs of Inception).
    """
    metric = FrechetInceptionDistance(feature=feature, normalize=False)
    _feed(metric.update, real, batch_size, real=True)
    _feed(metric.update, fake, batch_size, real=False)
    return float(metric.compute())


def kid(
    feature: nn.Module, real: Tensor, fake: Tensor, seed: int, *, subsets: int = 100,
    max_subset_size: int = 1000, batch_size: int = 500,
) -> tuple[float, float]:
    """(KID mean, KID std) over `subsets` random subsets; seeded (torchmetrics uses randperm).

    Subsets hold half the smaller set (at most `max_subset_size`): with the whole set in every
    subset, as small holdouts would otherwise give, all subsets are equal and the std is 0.
    """
    size = min(max_subset_size, len(real) // 2, len(fake) // 2)
    if size < 2:
        raise ValueError(f"KID needs at least 4 real and 4 fake samples, got {len(real)}, "
                         f"{len(fake)}")
    with _keeps_features():
        metric = KernelInceptionDistance(feature=feature, subsets=subsets, subset_size=size,
                                         normalize=False)
    _feed(metric.update, real, batch_size, real=True)
    _feed(metric.update, fake, batch_size, real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def inception_score(
    logits: nn.Module, images: Tensor, seed: int, *, splits: int = 10, batch_size: int = 500
) -> tuple[float, float]:
    """Classifier Inception Score (mean, std over `splits`) with the judge's logits; seeded.

    normalize=False matters: InceptionScore would otherwise turn our [-1, 1] floats into uint8
    even for a custom module.
    """
    with _keeps_features():
        metric = InceptionScore(feature=logits, splits=splits, normalize=False)
    _feed(metric.update, images, batch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def prdc_metrics(real_features: np.ndarray, fake_features: np.ndarray) -> dict[str, float]:
    """Precision/recall (k=3) and density/coverage (k=5) of fake features against real ones."""
    for name, f in (("real", real_features), ("fake", fake_features)):
        if f.ndim != 2 or len(f) <= DC_K:
            raise ValueError(f"prdc needs (N > {DC_K}, F) {name} features, got {f.shape}")
    real = np.asarray(real_features, dtype=np.float32)
    fake = np.asarray(fake_features, dtype=np.float32)
    # prdc prints the set sizes on every call; keep library output off our stdout.
    with contextlib.redirect_stdout(io.StringIO()):
        pr = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=PR_K)
        dc = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=DC_K)
    return {
        "precision": float(pr["precision"]),
        "recall": float(pr["recall"]),
        "density": float(dc["density"]),
        "coverage": float(dc["coverage"]),
    }


def class_shares(labels: Tensor, num_classes: int) -> Tensor:
    """(N,) int64 → (K,) float64 shares summing to 1."""
    counts = torch.bincount(labels.long(), minlength=num_classes)[:num_classes].double()
    return counts / counts.sum().clamp(min=1.0)


def class_kl(p_real: Tensor, q_gen: Tensor, eps: float = KL_EPS) -> float:
    """KL(p_real ‖ q_gen) in nats; q is floored at `eps` (then renormalised) so it stays finite."""
    q = q_gen.double().clamp(min=eps)
    q = q / q.sum()
    p = p_real.double()
    mask = p > 0
    return float((p[mask] * (p[mask] / q[mask]).log()).sum())


def class_stats(
    predicted: Tensor, p_real: Tensor, threshold: float
) -> dict[str, float | list[float] | int]:
    """Judge's view of generated classes: shares, classes covered (share > threshold), KL."""
    shares = class_shares(predicted, len(p_real))
    return {
        "class_hist": [round(float(s), 6) for s in shares],
        "classes_covered": int((shares > threshold).sum()),
        "class_kl": class_kl(p_real, shares),
    }

