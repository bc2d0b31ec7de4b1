"""Sample-quality metrics in the judge's feature space: FID, KID, IS, PRDC, copying, classes.

What this module is: thin, seeded wrappers around maintained implementations —
torchmetrics' `FrechetInceptionDistance`, `KernelInceptionDistance` and `InceptionScore` with the
judge as their custom `feature` module — plus three hand-written pieces:
  - PRDC (Kynkäänniemi et al. 2019 precision/recall with k=3; Naeem et al. 2020
    density/coverage with k=5) computed once, in blocks: the `prdc` package builds full N×N
    distance matrices (≈0.8 GB each at MNIST size) and would run twice for two k; here every
    distance matrix is a `BLOCK`×`BLOCK` tile, so memory is bounded whatever N. It is pinned
    against the `prdc` package on small inputs (tests/unit/test_metrics.py);
  - the copy statistics: Meehan, Chaudhuri & Dasgupta's (AISTATS 2020) data-copying test C_T
    as their code computes it (github.com/casey-meehan/data-copying: k-means cells of the
    training features from scikit-learn, per cell scipy's Mann–Whitney U of generated-to-train
    against holdout-to-train nearest distances, Z-scored, averaged with the cells' holdout
    shares), and the median distance ratio, distances blocked the same way;
  - the judge's class histogram, classes covered and KL(real classes ‖ generated classes).

What it is not: it samples no generator, trains no judge, knows no storage. Inputs are image
tensors (N, C, H, W) in [-1, 1] or feature arrays; outputs are plain floats.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import mannwhitneyu
from sklearn.cluster import KMeans
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore
from torchmetrics.image.kid import KernelInceptionDistance

PR_K = 3  # Kynkäänniemi et al. 2019 use k=3 for improved precision/recall
DC_K = 5  # Naeem et al. 2020 recommend k=5 for density/coverage
KL_EPS = 1e-6  # an empty generated class costs p·log(p/1e-6): large but finite
BLOCK = 1024  # rows × columns of one distance tile: 1024² float64 = 8 MB, whatever N
COPY_QUANTILE = 0.1  # copy_fraction: share of generated samples nearer to train than 90 % of
                     # holdout images are; ≈ 0.1 for fresh samples, 1.0 for copies (reported)
# C_T's cells: k = holdout images // COPY_HOLDOUT_PER_CELL k-means cells, 1..MAX_COPY_CELLS. The
# paper used 50 cells for MNIST's 10,000 test images (200 a cell); fewer, fuller cells here,
# because C_T averages per-cell Z scores, each of which grows only with √(its holdout count):
# with p of the samples copied and many samples, C_T ≈ −p·√(3·holdout per cell), so 100 a
# cell lets the digits holdout (≈ 360: 3 cells) see about a fifth of the samples copied.
COPY_HOLDOUT_PER_CELL = 100
MAX_COPY_CELLS = 50
COPY_MIN_GENERATED = 20  # a cell enters C_T only with more generated samples than this (the
                         # paper's τ = 20/m: Z_U of a nearly empty cell is noise)


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


@dataclass(frozen=True)
class CopyCells:
    """The partition Π of C_T: k-means cells of the training features (Meehan et al. 2020)."""

    kmeans: KMeans

    @property
    def k(self) -> int:
        return int(self.kmeans.n_clusters)

    def cell_of(self, features: np.ndarray | Tensor) -> np.ndarray:
        """(N,) cell of each feature row: its nearest k-means centre."""
        return self.kmeans.predict(np.asarray(features, dtype=np.float64))


def copy_cells(train_features: np.ndarray | Tensor, n_holdout: int, *,
               seed: int = 0) -> CopyCells:
    """k-means cells of the training features, k = n_holdout // COPY_HOLDOUT_PER_CELL within
    [1, MAX_COPY_CELLS] (and no more than the training rows); seeded."""
    train = np.asarray(train_features, dtype=np.float64)
    k = int(np.clip(n_holdout // COPY_HOLDOUT_PER_CELL, 1, MAX_COPY_CELLS))
    return CopyCells(KMeans(n_clusters=min(k, len(train)), n_init=1,
                            random_state=seed).fit(train))


def z_u(d_fake: Tensor, d_hold: Tensor) -> float:
    """Meehan et al.'s Z_U: the Mann–Whitney U of generated against holdout distances to the
    training set, Z-scored under the null (both from one distribution), with their
    continuity term: ≪ 0 when generated samples sit nearer to the training set."""
    m, n = len(d_fake), len(d_hold)
    u = float(mannwhitneyu(d_fake.numpy(), d_hold.numpy(), alternative="less").statistic)
    return (u - (m * n / 2 - 0.5)) / math.sqrt(m * n * (m + n + 1) / 12)


def copy_ct(train: Tensor, holdout: Tensor, fake: Tensor, cells: CopyCells, *,
            block: int = BLOCK) -> tuple[float, int]:
    """(C_T, cells used): Σ_π P_n(π) Z_U(π) / Σ_π P_n(π) over the cells π holding more than
    COPY_MIN_GENERATED generated samples and some holdout ones, where Z_U(π) compares the
    distances of π's generated and holdout features to π's training features. NaN when no
    cell qualifies. As `Zu`, `Zu_cells` and `C_T` of the authors' data_copying_tests.py."""
    t_cell, h_cell, f_cell = (torch.from_numpy(cells.cell_of(a)) for a in (train, holdout, fake))
    weights, scores = [], []
    for c in range(cells.k):
        q, p = fake[f_cell == c], holdout[h_cell == c]  # (m_π, F), (n_π, F)
        if len(q) <= COPY_MIN_GENERATED or len(p) == 0:
            continue
        t = train[t_cell == c]  # (l_π, F): never empty, the cells are made from train
        d_q = smallest_distances(q, t, 1, block=block)[:, 0]  # (m_π,)
        d_p = smallest_distances(p, t, 1, block=block)[:, 0]  # (n_π,)
        weights.append(len(p) / len(holdout))
        scores.append(z_u(d_q, d_p))
    if not weights:
        return float("nan"), 0
    return float(np.dot(weights, scores) / np.sum(weights)), len(weights)


def copy_stats(train_features: np.ndarray | Tensor, holdout_features: np.ndarray | Tensor,
               fake_features: np.ndarray | Tensor, *, cells: CopyCells | None = None,
               quantile: float = COPY_QUANTILE, block: int = BLOCK) -> dict[str, float]:
    """How close generated samples sit to the training set, against fresh real images.

    d_fake / d_holdout: each generated / holdout feature's distance to its nearest training
    feature. `copy_ct`: Meehan et al.'s C_T (`copy_ct`; ≈ 0 ± 1 for fresh samples, ≪ 0 when
    samples sit nearer to the training set than held-out images do; `cells` from
    `copy_cells`, made here when not given) and `copy_cells` the cells it used;
    `copy_distance_ratio`: median d_fake / median d_holdout (≈ 1 for fresh images, 0 once half
    the samples are copies); `copy_fraction` (reported, not judged): share of d_fake at or
    below the `quantile` of d_holdout (≈ `quantile` fresh, 1.0 copies; blind when the
    holdout holds duplicates of training images, since its quantile is then 0).
    """
    train = _as_tensor(train_features, "train")
    hold = _as_tensor(holdout_features, "holdout")
    fake = _as_tensor(fake_features, "fake")
    d_fake = smallest_distances(fake, train, 1, block=block)[:, 0]  # (M,)
    d_hold = smallest_distances(hold, train, 1, block=block)[:, 0]  # (H,)
    threshold = torch.quantile(d_hold, quantile)
    ratio = float(d_fake.median() / d_hold.median()) if d_hold.median() > 0 else float("nan")
    ct, used = copy_ct(train, hold, fake, cells or copy_cells(train, len(hold)), block=block)
    return {"copy_ct": ct, "copy_cells": float(used),
            "copy_distance_ratio": ratio,
            "copy_fraction": float((d_fake <= threshold).double().mean())}


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

