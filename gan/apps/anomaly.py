"""Anomaly detection with a trained GAN: score images by how poorly G can explain them.

What this module is:
  * AnoGAN scoring (Schlegl et al. 2017, "Unsupervised Anomaly Detection with Generative
    Adversarial Networks to Guide Marker Discovery"): search z so that G(z) matches x
    (`gan.apps.latent_search`), minimising  A(z) = (1 − λ)·Σ|x − G(z)| + λ·Σ|f(x) − f(G(z))|,
    where f = `D.features` (the discriminator's penultimate layer, the paper's feature-matching
    "discrimination loss") and λ = 0.1 as in the paper; the anomaly score is A at the best z.
    Conditional generators search the given label, or every class (keeping the best).
  * Two simple baselines in pixel space (scikit-learn): PCA reconstruction error and the
    distance to the k nearest training images.
  * `score_file`: the library side of `gan anomaly` and of the `score_anomalies` flow —
    model URI + images .npz (path or s3://) → per-image scores CSV (path or s3://).

What it is not: no training and no one-class evaluation protocol (`gan.apps.studies.anomaly_eval`),
no printing (a `progress` callback lets the caller draw a bar), no encoder (f-AnoGAN's fast encoder,
Schlegl et al. 2019, is `gan.apps.fanogan`; the evaluation uses it, `gan anomaly` does not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from gan.apps import inputs as app_inputs
from gan.apps.latent_search import Progress, SearchConfig, frozen, render, search
from gan.io.uri import storage_for
from gan.nets.models import Discriminator, Generator

if TYPE_CHECKING:
    from gan.core.settings import Settings

ANOGAN_LAMBDA = 0.1  # Schlegl et al. 2017, section 2.2: weight of the discrimination loss


@torch.no_grad()
def _features(D: Discriminator, x: Tensor, batch: int = 1024) -> Tensor:
    return torch.cat([D.features(x[i:i + batch]) for i in range(0, len(x), batch)])  # (N, F)


class AnoGANObjective:
    """A(z) per candidate: (1 − λ)·residual + λ·feature residual, both L1 sums (the paper's)."""

    def __init__(self, x: Tensor, D: Discriminator | None, lam: float = ANOGAN_LAMBDA) -> None:
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lambda must lie in [0, 1], got {lam}")
        if D is None and lam > 0:
            raise ValueError("the feature loss needs the discriminator: this model has none "
                             "(use lambda 0 for a residual-only score)")
        self.x, self.D, self.lam = x, D, lam  # x (N, C, H, W) on the search device
        with frozen(D):
            self.fx = _features(D, x) if D is not None else None  # (N, F)

    def parts(self, gz: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """(residual (B,), feature residual (B,)); the latter is 0 without D."""
        residual = (self.x[rows] - gz).abs().flatten(1).sum(1)  # Σ over C·H·W
        if self.D is None or self.fx is None:
            return residual, torch.zeros_like(residual)
        feature = (self.fx[rows] - self.D.features(gz)).abs().sum(1)  # Σ over F
        return residual, feature

    def __call__(self, gz: Tensor, rows: Tensor, z: Tensor, y: Tensor | None) -> Tensor:
        residual, feature = self.parts(gz, rows)
        return (1.0 - self.lam) * residual + self.lam * feature  # (B,)


@dataclass(frozen=True, eq=False)
class AnomalyScores:
    score: np.ndarray  # (N,) A(z*): higher = more anomalous
    residual: np.ndarray  # (N,) Σ|x − G(z*)|
    feature: np.ndarray  # (N,) Σ|f(x) − f(G(z*))| (0 without D)
    label: np.ndarray | None  # (N,) class of the best candidate (conditional generators)
    reconstruction: Tensor  # (N, C, H, W) G(z*) on CPU
    history: list[float]  # mean objective per search step (falls when the search works)


def anogan_scores(G: Generator, D: Discriminator | None, x: Tensor, *,
                  labels: Tensor | None = None, lam: float = ANOGAN_LAMBDA,
                  cfg: SearchConfig | None = None,
                  progress: Progress | None = None) -> AnomalyScores:
    """AnoGAN anomaly scores of images x (N, C, H, W) in [-1, 1] (any device; run on G's)."""
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(G.image_shape):
        raise ValueError(f"images have shape {tuple(x.shape)}, the generator makes "
                         f"(N, {', '.join(map(str, G.image_shape))})")
    if len(x) == 0:
        raise ValueError("no images to score (N = 0)")
    dev = next(G.parameters()).device
    objective = AnoGANObjective(x.to(dev), D, lam)
    result = search(G, objective, len(x), labels=labels, cfg=cfg, progress=progress,
                    modules=(D,))
    recon = render(G, result)  # (N, C, H, W)
    with frozen(D), torch.no_grad():
        residual, feature = objective.parts(recon.to(dev), torch.arange(len(x), device=dev))
    score = (1.0 - lam) * residual + lam * feature
    return AnomalyScores(score=score.cpu().numpy(), residual=residual.cpu().numpy(),
                         feature=feature.cpu().numpy(),
                         label=None if result.y is None else result.y.numpy(),
                         reconstruction=recon, history=result.history)


# --------------------------------------------------------------------------- baselines


def _flat(x: Tensor) -> np.ndarray:
    return x.detach().cpu().flatten(1).numpy().astype(np.float64)  # (N, C·H·W)


def pca_scores(train: Tensor, test: Tensor, n_components: float | int = 0.9) -> np.ndarray:
    """PCA reconstruction error Σ(x − x̂)² of test images, PCA fitted on train images.

    `n_components` as scikit-learn takes it: a share of variance (0.9) or a count."""
    from sklearn.decomposition import PCA  # lazy: scikit-learn (≈1.5 s) for this baseline only

    pca = PCA(n_components=n_components, svd_solver="full", random_state=0).fit(_flat(train))
    t = _flat(test)
    recon = pca.inverse_transform(pca.transform(t))
    return ((t - recon) ** 2).sum(1)


def knn_scores(train: Tensor, test: Tensor, k: int = 1) -> np.ndarray:
    """Mean Euclidean pixel distance of each test image to its k nearest train images."""
    from sklearn.neighbors import NearestNeighbors  # lazy: scikit-learn, this baseline only

    nn_ = NearestNeighbors(n_neighbors=min(k, len(train))).fit(_flat(train))
    dist, _ = nn_.kneighbors(_flat(test))
    return dist.mean(1)


# --------------------------------------------------------------------------- files


def score_file(model_uri: str, input_uri: str, out_uri: str, *, settings: Settings | None,
               cfg: SearchConfig | None = None, lam: float = ANOGAN_LAMBDA,
               use_labels: bool = True, device: torch.device | str = "cpu",
               progress: Progress | None = None) -> dict[str, Any]:
    """`gan anomaly`: load G (and D) from the registry, score the .npz, write a CSV.

    CSV columns: index, score, residual, feature, and `label` (best class, conditional models)
    and `y` (the file's label) when known. Returns a summary for printing.
    """
    # lazy: gan.registry loads MLflow (≈2 s), needed only once a model is fetched
    from gan.registry.load import load_discriminator, load_generator

    storage = storage_for(settings, model_uri, input_uri, out_uri)
    G = load_generator(model_uri, settings=settings, device=device)
    batch = app_inputs.load_images(input_uri, G.image_shape, storage=storage,
                                   num_classes=G.num_classes if G.conditional else None)
    D = load_discriminator(model_uri, settings=settings, device=device) if lam > 0 else None
    labels = batch.y if use_labels and G.conditional else None
    s = anogan_scores(G, D, batch.x, labels=labels, lam=lam, cfg=cfg, progress=progress)
    cols: dict[str, Any] = {"index": list(range(len(s.score))), "score": s.score.tolist(),
                            "residual": s.residual.tolist(), "feature": s.feature.tolist()}
    if s.label is not None:
        cols["label"] = s.label.tolist()
    if batch.y is not None:
        cols["y"] = batch.y.tolist()
    written = app_inputs.write_output(out_uri, app_inputs.csv_bytes(cols), storage, "text/csv")
    return {"model": model_uri, "input": input_uri, "written": written, "n": len(s.score),
            "score_mean": float(s.score.mean()), "score_max": float(s.score.max())}

