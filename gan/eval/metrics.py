"""Sample-quality metrics in the judge's feature space: FID, KID, IS, PRDC, copying, classes.

What this module is: thin, seeded wrappers around maintained implementations —
torchmetrics' `FrechetInceptionDistance`, `KernelInceptionDistance` and `InceptionScore` with the
judge as their custom `feature` module — plus three hand-written pieces:
  - PRDC (Kynkäänniemi et al. 2019 precision/recall with k=3; Naeem et al. 2020
    density/coverage with k=5) computed once, in blocks: the `prdc` package builds full N×N
    distance matrices (≈0.8 GB each at MNIST size) and would run twice for two k; here every
    distance matrix is a `BLOCK`×`BLOCK` tile, so memory is bounded whatever N. It is pinned
    against the `prdc` package on small inputs (tests/unit/test_metrics.py);
  - the copy statistics (generated-to-nearest-train distances against holdout-to-nearest-train
    distances, the idea of Meehan et al. 2020's data-copying test), blocked the same way;
  - the judge's class histogram, classes covered and KL(real classes ‖ generated classes).

What it is not: it samples no generator, trains no judge, knows no storage. Inputs are image
tensors (N, C, H, W) in [-1, 1] or feature arrays; outputs are plain floats.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

PR_K = 3  # Kynkäänniemi et al. 2019 use k=3 for improved precision/recall
DC_K = 5  # Naeem et al. 2020 recommend k=5 for density/coverage
KL_EPS = 1e-6  # an empty generated class costs p·log(p/1e-6): large but finite
BLOCK = 1024  # rows × columns of one distance tile: 1024² float64 = 8 MB, whatever N
COPY_QUANTILE = 0.1  # copy_fraction: share of generated samples nearer to train than 90 % of
                     # holdout images are; ≈ 0.1 for fresh samples, 1.0 for copies


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


def _as_tensor(features: np.ndarray | Tensor, name: str, min_rows: int = 1,
               what: str = "distances") -> Tensor:
    f = torch.as_tensor(np.asarray(features), dtype=torch.float64)
    if f.ndim != 2 or len(f) < min_rows:
        raise ValueError(f"{what} needs (N ≥ {min_rows}, F) {name} features, got "
                         f"{tuple(f.shape)}")
    return f


def _tiles(a: Tensor, b: Tensor, block: int) -> Iterator[tuple[int, int, Tensor]]:
    """(row offset, column offset, distances (≤block, ≤block)) over all tiles of cdist(a, b)."""
    for i in range(0, len(a), block):
        for j in range(0, len(b), block):
            yield i, j, torch.cdist(a[i:i + block], b[j:j + block])


def smallest_distances(x: np.ndarray | Tensor, ref: np.ndarray | Tensor, k: int, *,
                       block: int = BLOCK) -> Tensor:
    """(N, k) float64: for each row of x, its k smallest Euclidean distances to the rows of
    `ref`, ascending (a point of x that is also in ref has 0 first). Memory O(block² + N·k)."""
    a, b = _as_tensor(x, "query"), _as_tensor(ref, "reference", min_rows=k)
    best = torch.full((len(a), k), float("inf"), dtype=torch.float64)  # (N, k)
    for i, _, d in _tiles(a, b, block):
        rows = slice(i, i + len(d))
        best[rows] = torch.cat([best[rows], d], dim=1).topk(k, dim=1, largest=False).values
    return best


def prdc_metrics(real_features: np.ndarray | Tensor, fake_features: np.ndarray | Tensor, *,
                 block: int = BLOCK) -> dict[str, float]:
    """Precision/recall (k=`PR_K`) and density/coverage (k=`DC_K`) of fake against real features.

    The definitions of the `prdc` package (a k-NN radius is the distance to the k-th nearest
    other point of the own set; "inside" is strictly less than the radius), computed from
    one pass over the real-real, fake-fake and real-fake distance tiles.
    """
    real = _as_tensor(real_features, "real", min_rows=DC_K + 1, what="prdc")
    fake = _as_tensor(fake_features, "fake", min_rows=DC_K + 1, what="prdc")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real features have {real.shape[1]} dims, fake {fake.shape[1]}")
    # k-th neighbour radii; column 0 is the point itself (distance 0), as in `prdc`.
    r_real = smallest_distances(real, real, DC_K + 1, block=block)  # (R, 6)
    r_real_pr, r_real_dc = r_real[:, PR_K], r_real[:, DC_K]  # (R,), (R,)
    r_fake_pr = smallest_distances(fake, fake, PR_K + 1, block=block)[:, PR_K]  # (M,)
    fake_in_real = torch.zeros(len(fake), dtype=torch.bool)  # precision: in some real ball
    fake_ball_count = torch.zeros(len(fake), dtype=torch.float64)  # density: real DC balls
    real_in_fake = torch.zeros(len(real), dtype=torch.bool)  # recall: in some fake ball
    real_covered = torch.zeros(len(real), dtype=torch.bool)  # coverage: nearest fake inside
    for i, j, d in _tiles(real, fake, block):  # d: (r, m) real rows i.., fake columns j..
        ri, fj = slice(i, i + d.shape[0]), slice(j, j + d.shape[1])
        fake_in_real[fj] |= (d < r_real_pr[ri, None]).any(0)
        fake_ball_count[fj] += (d < r_real_dc[ri, None]).sum(0)
        real_in_fake[ri] |= (d < r_fake_pr[None, fj]).any(1)
        real_covered[ri] |= (d < r_real_dc[ri, None]).any(1)  # min_j d < r ⇔ any_j d < r
    return {
        "precision": float(fake_in_real.double().mean()),
        "recall": float(real_in_fake.double().mean()),
        "density": float(fake_ball_count.mean() / DC_K),
        "coverage": float(real_covered.double().mean()),
    }


def copy_stats(train_features: np.ndarray | Tensor, holdout_features: np.ndarray | Tensor,
               fake_features: np.ndarray | Tensor, *, quantile: float = COPY_QUANTILE,
               block: int = BLOCK) -> dict[str, float]:
    """How close generated samples sit to the training set, against fresh real images.

    d_fake / d_holdout: each generated / holdout feature's distance to its nearest training
    feature. `copy_fraction`: share of d_fake at or below the `quantile` of d_holdout (a
    generator drawing new images from the data distribution scores ≈ `quantile`, one that
    returns training images 1.0); `copy_distance_ratio`: median d_fake / median d_holdout
    (≈ 1 for fresh images, 0 for copies).
    """
    d_fake = smallest_distances(fake_features, train_features, 1, block=block)[:, 0]  # (M,)
    d_hold = smallest_distances(holdout_features, train_features, 1, block=block)[:, 0]  # (H,)
    threshold = torch.quantile(d_hold, quantile)
    ratio = float(d_fake.median() / d_hold.median()) if d_hold.median() > 0 else float("nan")
    return {"copy_fraction": float((d_fake <= threshold).double().mean()),
            "copy_distance_ratio": ratio}


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

