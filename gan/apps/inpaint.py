"""Inpainting with a trained GAN: fill a masked region with the G(z) that fits the known pixels.

What this module is (Yeh et al. 2017, "Semantic Image Inpainting with Deep Generative Models"):
  * the objective searched over z by `gan.apps.latent_search`:
        L(z) = Σ W ⊙ |G(z) − x|  +  λ_p · softplus(−D(G(z), y))
    — the contextual loss (plain: W = known mask; weighted: W_i = share of missing pixels in a
    7×7 window around known pixel i, the paper's eq. 2) plus the prior loss, the paper's
    λ·log(1 − D(G(z))) written for logits in its non-saturating form −log σ(D) (bounded below,
    unlike log(1 − σ(D)) with a hinge-trained D); λ_p = 0.003 as in the paper.
    Conditional generators search the given label, or every class (keeping the best).
  * the blend that keeps the known pixels exactly: out = x where known, G(z*) elsewhere
    (`torch.where`, so known pixels are bit-identical to the input; no Poisson blending).
  * the baselines of the evaluation: mean fill (per-pixel train mean) and nearest-neighbour
    fill (the train image closest on the known pixels supplies the missing ones).
  * `inpaint_file`: the library side of `gan inpaint` (grid PNG original | masked | filled,
    and/or an .npz of filled images).

What it is not: no evaluation protocol (`gan.apps.studies.runs`), no printing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gan.apps import inputs as app_inputs
from gan.apps.latent_search import Progress, SearchConfig, render, search
from gan.eval import pictures
from gan.io.uri import storage_for
from gan.nets.models import Discriminator, Generator

if TYPE_CHECKING:
    from gan.core.settings import Settings
    from gan.data.prepare import PreparedData
    from gan.eval.judge import Judge

PRIOR_WEIGHT = 0.003  # Yeh et al. 2017, section 3.2: λ of the prior loss
WINDOW = 7  # Yeh et al. 2017: neighbourhood of the weighted contextual loss
Weighting = Literal["plain", "weighted"]


def contextual_weights(known: Tensor, weighting: Weighting = "plain") -> Tensor:
    """(N, 1, H, W) weights of the contextual loss; 0 on missing pixels in both variants."""
    if weighting == "plain":
        return known.clone()
    if weighting != "weighted":
        raise ValueError(f"weighting must be 'plain' or 'weighted', got {weighting!r}")
    missing_share = F.avg_pool2d(1.0 - known, WINDOW, stride=1, padding=WINDOW // 2,
                                 count_include_pad=False)  # (N, 1, H, W)
    return missing_share * known


class InpaintObjective:
    """Contextual loss on the known pixels plus λ_p times D's prior loss, per candidate."""

    def __init__(self, x: Tensor, known: Tensor, D: Discriminator | None, *,
                 weighting: Weighting = "plain", prior_weight: float = PRIOR_WEIGHT) -> None:
        if prior_weight < 0:
            raise ValueError(f"prior weight must be >= 0, got {prior_weight}")
        if D is None and prior_weight > 0:
            raise ValueError("the prior loss needs the discriminator: this model has none "
                             "(use prior weight 0)")
        self.x = x  # (N, C, H, W)
        self.w = contextual_weights(known.expand(len(x), -1, -1, -1), weighting)  # (N, 1, H, W)
        self.D, self.prior_weight = D, prior_weight

    def __call__(self, gz: Tensor, rows: Tensor, z: Tensor, y: Tensor | None) -> Tensor:
        ctx = (self.w[rows] * (gz - self.x[rows]).abs()).flatten(1).sum(1)  # (B,)
        if self.D is None or self.prior_weight == 0:
            return ctx
        prior = F.softplus(-self.D(gz, y))  # (B,) −log σ(D(G(z), y))
        return ctx + self.prior_weight * prior


def blend(x: Tensor, known: Tensor, fill: Tensor) -> Tensor:
    """Known pixels of x (bit-exact), `fill` elsewhere; known (N or 1, 1, H, W) of 0/1."""
    return torch.where(known.expand_as(x).bool(), x, fill)


def check_inputs(x: Tensor, known: Tensor, image_shape: tuple[int, ...]) -> None:
    """Shapes of images and mask, with the mismatch named."""
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(image_shape):
        raise app_inputs.InputError(f"images have shape {tuple(x.shape)}, the generator makes "
                                    f"(N, {', '.join(map(str, image_shape))})")
    if len(x) == 0:
        raise app_inputs.InputError("no images to inpaint (N = 0)")
    n, _, h, w = x.shape
    if known.ndim != 4 or known.shape[1] != 1 or tuple(known.shape[2:]) != (h, w) \
            or known.shape[0] not in (1, n):
        raise app_inputs.InputError(f"mask has shape {tuple(known.shape)}, images "
                                    f"{tuple(x.shape)}: use (1 or {n}, 1, {h}, {w})")


@dataclass(frozen=True, eq=False)
class Inpainted:
    filled: Tensor  # (N, C, H, W): known pixels of x, generated elsewhere
    generated: Tensor  # (N, C, H, W): G(z*)
    label: Tensor | None  # (N,) class of the best candidate (conditional generators)
    loss: Tensor  # (N,) objective at z*
    history: list[float]  # mean objective per search step


def inpaint(G: Generator, D: Discriminator | None, x: Tensor, known: Tensor, *,
            labels: Tensor | None = None, cfg: SearchConfig | None = None,
            weighting: Weighting = "plain", prior_weight: float = PRIOR_WEIGHT,
            progress: Progress | None = None) -> Inpainted:
    """Fill the missing pixels (known == 0) of x (N, C, H, W) in [-1, 1]."""
    check_inputs(x, known, G.image_shape)
    dev = next(G.parameters()).device
    x, known = x.float().cpu(), known.float().cpu()
    objective = InpaintObjective(x.to(dev), known.to(dev), D, weighting=weighting,
                                 prior_weight=prior_weight)
    result = search(G, objective, len(x), labels=labels, cfg=cfg, progress=progress,
                    modules=(D,))
    gen = render(G, result)  # (N, C, H, W) CPU
    return Inpainted(filled=blend(x, known, gen), generated=gen, label=result.y,
                     loss=result.loss, history=result.history)


# --------------------------------------------------------------------------- baselines


def mean_fill(x: Tensor, known: Tensor, train: Tensor) -> Tensor:
    """Missing pixels ← the per-pixel mean of the train images."""
    return blend(x, known, train.float().mean(0, keepdim=True).expand_as(x))


@torch.no_grad()
def nearest_neighbour_fill(x: Tensor, known: Tensor, train: Tensor, batch: int = 256
                           ) -> tuple[Tensor, Tensor]:
    """Missing pixels ← those of the train image nearest to x on x's KNOWN pixels.

    Written by hand: the distance uses each query's own mask, Σ_j m_j (x_j − t_j)², which
    scikit-learn's NearestNeighbors cannot express; expanded as Σ m x² − 2 (m x)·t + m·t² it is
    three matrix products. Returns (filled (N, C, H, W), neighbour index (N,))."""
    t = train.float().flatten(1)  # (T, P)
    m_all = known.expand(len(x), -1, -1, -1).float()
    m_all = m_all.expand(-1, x.shape[1], -1, -1).flatten(1)  # (N, P)
    xs = x.float().flatten(1)  # (N, P)
    idx = []
    for i in range(0, len(xs), batch):
        m, q = m_all[i:i + batch], xs[i:i + batch]
        d = (m * q * q).sum(1, keepdim=True) - 2 * (m * q) @ t.T + m @ (t * t).T  # (b, T)
        idx.append(d.argmin(1))
    nn_idx = torch.cat(idx)
    return blend(x, known, train[nn_idx].float()), nn_idx


def region_errors(filled: Tensor, original: Tensor, known: Tensor) -> tuple[float, float]:
    """(MSE, PSNR dB) on the missing region, pixels on the [0, 1] scale; mean over images."""
    miss = (1.0 - known).expand_as(original).flatten(1)  # (N, P)
    sq = (((filled - original) / 2.0) ** 2).flatten(1)  # [-1, 1] → [0, 1] scale
    mse = (sq * miss).sum(1) / miss.sum(1)  # (N,)
    psnr = 10.0 * torch.log10(1.0 / mse.clamp(min=1e-10))  # peak 1 on [0, 1]
    return float(mse.mean()), float(psnr.mean())


# --------------------------------------------------------------------------- files


def grid_png(original: Tensor, known: Tensor, filled: Tensor, scale: int = 2) -> bytes:
    """Rows of (original | masked | filled); missing pixels shown mid-grey."""
    masked = blend(original, known, torch.zeros_like(original))
    tiles = torch.stack([original, masked, filled], dim=1).flatten(0, 1)  # (3N, C, H, W)
    return pictures.png_bytes(pictures.image_grid(tiles, 3, scale=scale))


def inpaint_file(model_uri: str, input_uri: str, mask: str, *, out_png: str | None,
                 out_npz: str | None, settings: Settings | None, cfg: SearchConfig | None = None,
                 use_labels: bool = True, weighting: Weighting = "plain",
                 prior_weight: float = PRIOR_WEIGHT, mask_seed: int = 0,
                 device: torch.device | str = "cpu", progress: Progress | None = None
                 ) -> dict[str, Any]:
    """`gan inpaint`: model URI + images .npz + mask (center | boxes | file) → grid / .npz."""
    # lazy: gan.registry loads MLflow (≈2 s), needed only once a model is fetched
    from gan.registry.load import load_discriminator, load_generator

    if out_png is None and out_npz is None:
        raise app_inputs.InputError("nothing to write: give --out (PNG grid) and/or --npz")
    storage = storage_for(settings, model_uri, input_uri, mask, out_png or "",
                                     out_npz or "")
    G = load_generator(model_uri, settings=settings, device=device)
    batch = app_inputs.load_images(input_uri, G.image_shape, storage=storage,
                                   num_classes=G.num_classes if G.conditional else None)
    _, h, w = G.image_shape
    known = app_inputs.make_mask(mask, len(batch.x), h, w, seed=mask_seed, storage=storage)
    check_inputs(batch.x, known, G.image_shape)
    D = load_discriminator(model_uri, settings=settings, device=device) \
        if prior_weight > 0 else None
    res = inpaint(G, D, batch.x, known, labels=batch.y if use_labels else None, cfg=cfg,
                  weighting=weighting, prior_weight=prior_weight, progress=progress)
    written = []
    if out_png is not None:
        png = grid_png(batch.x, known, res.filled)
        written.append(app_inputs.write_output(out_png, png, storage, "image/png"))
    if out_npz is not None:
        arrays = {"x": res.filled.numpy().astype(np.float32),
                  "known": known.expand(len(batch.x), -1, -1, -1).numpy().astype(np.uint8)}
        if res.label is not None:
            arrays["y"] = res.label.numpy().astype(np.int64)
        written.append(app_inputs.write_output(out_npz, app_inputs.npz_bytes(**arrays), storage))
    return {"model": model_uri, "input": input_uri, "mask": mask, "n": len(batch.x),
            "written": written, "loss_mean": float(res.loss.mean())}


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True, eq=False)
class InpaintEval:
    rows: dict[str, dict[str, float]]  # method → {mse, psnr, judge_accuracy}
    holdout_idx: np.ndarray  # which holdout images (every method used these, with `known`)
    known: Tensor  # (N or 1, 1, H, W) the mask every method used
    filled: dict[str, Tensor]  # method → (N, C, H, W)
    history: list[float]


def evaluate_inpainting(G: Generator, D: Discriminator | None, data: PreparedData, judge: Judge,
                        known: Tensor, *, holdout_idx: np.ndarray | None = None,
                        cfg: SearchConfig | None = None, weighting: Weighting = "plain",
                        prior_weight: float = PRIOR_WEIGHT, progress: Progress | None = None
                        ) -> InpaintEval:
    """GAN fill vs mean fill vs nearest-neighbour fill on holdout images (labels unknown to
    every method): MSE / PSNR on the missing region and the judge's accuracy on the filled
    images; `original` (no pixel missing) is the judge's ceiling on the same images."""
    idx = np.arange(len(data.y_holdout)) if holdout_idx is None else np.asarray(holdout_idx)
    x, y = data.x_holdout[idx], data.y_holdout[idx]
    filled = {"gan": (res := inpaint(G, D, x, known, cfg=cfg, weighting=weighting,
                                     prior_weight=prior_weight, progress=progress)).filled,
              "mean": mean_fill(x, known, data.x_train),
              "nearest": nearest_neighbour_fill(x, known, data.x_train)[0],
              "original": x}
    rows = {}
    for name, f in filled.items():
        mse, psnr = region_errors(f, x, known) if name != "original" else (0.0, float("inf"))
        acc = float((judge.predict(f) == y).float().mean())
        rows[name] = {"mse": mse, "psnr": psnr, "judge_accuracy": acc}
    return InpaintEval(rows=rows, holdout_idx=idx, known=known, filled=filled,
                       history=res.history)
