"""The label-free judge: a self-supervised encoder whose features are the metric space.

The metric space (`SSLNet.features`, what FID/KID see) is the contrastive embedding beside the
encoder's pooled conv blocks (`gan.nets.ssl_net`); retrieval and 5-NN below check the
embedding, what self-supervision learnt; separation checks the metric space.

What this module is: `SSLJudge` (an `SSLNet` from `gan.nets.ssl_net`, in eval mode, and its
quality numbers), `train_ssl_judge` (SimCLR on a dataset's train split: the recipe sized by the
data, `gan.eval.ssl_train`; the views, `gan.eval.ssl_augment`: random resized crop, strong
colour jitter, random greyscale, blur), its quality check (`ssl_quality`, `check_ssl_judge`,
raising `JudgeError`) and its (de)serialisation (`ssl_judge.{safetensors,json}`); which judge
a dataset gets and the cache are `gan.eval.judge_ladder`'s.

The quality check, on the holdout split (never trained on); figures measured on the bundled
digits, painted digits (`gan.data.painted`) and shapes (`python -m gan.tools.ssl_study`):
  - view retrieval (embedding): for up to `RETRIEVAL_POOL` holdout images, the share whose
    augmented view (the training views, `CHECK_VIEWS`) has its own original as nearest
    neighbour among them (cosine). Untrained ≈ 0.16-0.34, trained 0.46-0.92, an encoder that
    sees colour only 0.01-0.25 (colour jitter moves its features): at least
    `eval.min_ssl_retrieval`, and `MIN_GAIN` above the same network untrained (same seed),
    which on easy data such as the bundled digits already has usable random features: an
    encoder that learnt nothing, or only colour, is refused whatever the data (both off with
    `eval.min_ssl_retrieval` = 0: the smoke preset);
  - separation (metric space): the Fréchet distance holdout-vs-uniform-noise over
    holdout-vs-train; a collapsed or constant encoder gives 0/0 (fails); useful features
    12-90 in format 2's embedding (colour-invariant features place noise nearer than raw
    pixels would), so at least `MIN_SEPARATION`;
  - where the data has labels: 5-NN holdout accuracy (embedding) against the train features,
    at least `eval.min_ssl_knn_accuracy` and `MIN_KNN_LIFT` of the way from chance (the largest
    class's share of the holdout) to 1 (both off with `eval.min_ssl_knn_accuracy` = 0). Labels
    only check the judge; they never train it.

What it is not: no class metrics (it has no classes), no metric math (`gan.eval.metrics`).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import Tensor

from gan.core.config import EvalConfig
from gan.eval import metrics as M
from gan.eval.judge import Judge, JudgeError, check_cached_blob
from gan.eval.ssl_augment import ViewConfig, augment
from gan.eval.ssl_train import SSLRecipe, fit_encoder, ssl_recipe
from gan.nets.ssl_net import SSLArch, SSLFeatureExtractor, SSLNet

if TYPE_CHECKING:
    from gan.data.prepare import PreparedData

SSL_FORMAT = 3  # 2: colour-jitter views, projector with BatchNorm, recipe sized by the data;
# 3: the metric space is the embedding beside the pooled conv blocks (`gan.nets.ssl_net`)
WEIGHTS_FILE = "ssl_judge.safetensors"
META_FILE = "ssl_judge.json"
RETRIEVAL_POOL = 256  # holdout images the retrieval check searches among (size-independent)
MIN_SEPARATION = 5.0  # FD(holdout, noise) / FD(holdout, train): useful features ≥ 12
MIN_GAIN = 0.1  # retrieval must beat the untrained encoder's by this much
KNN_K = 5
MIN_KNN_LIFT = 0.1  # 5-NN accuracy ≥ chance + this × (1 − chance), chance = largest class share
CHECK_VIEWS = ViewConfig()  # the retrieval check's views: the training default's
QUALITY_SEED = 7  # the check's augmentations, noise images and train subset


@dataclass
class SSLJudge:
    """A trained label-free judge (in eval mode) and its quality numbers (`ssl_quality`)."""

    net: SSLNet
    quality: dict[str, float]
    dataset_version: str
    seed: int
    epochs: int
    train_seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    recipe: SSLRecipe | None = None
    kind: ClassVar[str] = "self-supervised"
    has_classes: ClassVar[bool] = False

    @property
    def accuracy(self) -> float:
        """The report's `judge_accuracy`: kNN accuracy where labels exist, else retrieval."""
        return self.quality.get("knn_accuracy", self.quality.get("retrieval_accuracy", 0.0))

    def feature_module(self) -> SSLFeatureExtractor:
        return SSLFeatureExtractor(self.net)

    @torch.no_grad()
    def features(self, images: Tensor, batch_size: int = 512) -> Tensor:
        """(N, C, H, W) → (N, F) float32."""
        return torch.cat([self.net.features(b.float()) for b in images.split(batch_size)])


AnyJudge = Judge | SSLJudge


# --------------------------------------------------------------------------- training


def _check_images(data: PreparedData) -> tuple[int, int]:
    x = data.x_train
    if x.ndim != 4 or x.shape[2] != x.shape[3]:
        raise ValueError(f"dataset {data.name!r}: x_train must be (N, C, S, S), "
                         f"got {tuple(x.shape)}")
    if len(x) < 2 or len(data.x_holdout) < 2:
        raise ValueError(f"dataset {data.name!r}: the label-free judge needs at least 2 train "
                         f"and 2 holdout images, got {len(x)} and {len(data.x_holdout)}")
    return int(x.shape[1]), int(x.shape[2])


def train_ssl_judge(data: PreparedData, epochs: int | None = None, seed: int = 0, *,
                    recipe: SSLRecipe | None = None) -> SSLJudge:
    """Train the encoder on `data`'s train split (`gan.eval.ssl_train.fit_encoder`) with
    `recipe`, else the recipe `ssl_recipe` sizes by the data (`epochs` overriding its epochs);
    deterministic for a seed (CPU; the caller's global RNG is left alone); quality measured
    (`ssl_quality`), not checked. Labels, where the data has them, are not used to train."""
    c, s = _check_images(data)
    recipe = recipe or ssl_recipe(len(data.x_train), c, s, epochs)
    start = time.perf_counter()
    net = fit_encoder(data.x_train, recipe, seed)
    set_feature_scale(net, data.x_train)
    judge = SSLJudge(net=net, quality={}, dataset_version=data.version, seed=seed,
                     epochs=recipe.epochs, train_seconds=time.perf_counter() - start,
                     recipe=recipe)
    judge.quality = ssl_quality(judge, data)
    return judge


@torch.no_grad()
def set_feature_scale(net: SSLNet, x_train: Tensor) -> None:
    """mean(f²) = 1 on the train split for the embedding and for each metric block (KID's
    polynomial kernel is then well conditioned; no block outweighs another in FID)."""
    parts = [net.blocks(b) for b in x_train.float().split(512)]
    blocks = [torch.cat(p) for p in zip(*parts, strict=True)]  # [(N, F), (N, 4w), (N, 8w), (N, 4w)]
    scales = [b.square().mean().clamp(min=1e-12).rsqrt() for b in blocks]
    net.block_scales.copy_(torch.stack(scales))


# --------------------------------------------------------------------------- quality


@torch.no_grad()
def ssl_quality(judge: SSLJudge, data: PreparedData) -> dict[str, float]:
    """retrieval_accuracy, separation (and its two distances), knn_accuracy where labels exist;
    see the module docstring. Deterministic (`QUALITY_SEED`)."""
    gen = torch.Generator().manual_seed(QUALITY_SEED)
    hold, train = data.x_holdout.float(), data.x_train.float()
    pool = hold[:RETRIEVAL_POOL]  # (P, C, S, S)
    # Retrieval and 5-NN check the contrastive embedding (what training optimised), not the
    # wider metric space: its raw blocks are not meant to be view-invariant. Separation is in
    # the metric space (what FID is computed in).
    with torch.no_grad():
        f_pool = F.normalize(judge.net.embed(pool), dim=1)  # (P, F)
        f_view = F.normalize(judge.net.embed(augment(pool, gen, CHECK_VIEWS)), dim=1)
    own = (f_view @ f_pool.T).argmax(1) == torch.arange(len(pool))  # (P,)
    sub = train[torch.randperm(len(train), generator=gen)[: len(hold)]]
    noise = torch.rand(hold.shape, generator=gen) * 2 - 1  # uniform pixel noise
    feat = judge.feature_module()
    fd_real, fd_noise = M.fid(feat, hold, sub), M.fid(feat, hold, noise)
    out = {"retrieval_accuracy": float(own.float().mean()),
           "untrained_retrieval_accuracy": _untrained_retrieval(judge, data, pool),
           "fd_real_real": fd_real,
           "fd_real_noise": fd_noise,
           "separation": fd_noise / fd_real if fd_real > 0 else math.nan}
    if data.labelled and data.num_classes >= 2:
        # 5-NN in the embedding too: it asks what self-supervision learnt (the metric
        # space's low-level blocks are validated by gan.eval.validation instead).
        with torch.no_grad():
            f_train = F.normalize(judge.net.embed(train), dim=1)  # (N, F)
            f_hold = F.normalize(judge.net.embed(hold), dim=1)  # (M, F)
        k = min(KNN_K, len(train))
        votes = data.y_train[(f_hold @ f_train.T).topk(k, dim=1).indices]  # (M, k)
        pred = torch.mode(votes, dim=1).values  # ties → the smallest label
        out["knn_accuracy"] = float((pred == data.y_holdout).float().mean())
        out["knn_chance"] = float(torch.bincount(data.y_holdout).max() / len(data.y_holdout))
    return out


def _untrained_retrieval(judge: SSLJudge, data: PreparedData, pool: Tensor) -> float:
    """The retrieval accuracy of the same network at its initialisation (same seed, same
    augmentations): the baseline the trained encoder must beat."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(judge.seed)
        net = SSLNet(judge.net.arch)  # the weights train_ssl_judge started from
    net.eval()
    set_feature_scale(net, data.x_train)
    gen = torch.Generator().manual_seed(QUALITY_SEED)
    with torch.no_grad():
        f_pool = F.normalize(net.embed(pool), dim=1)  # (P, F)
        f_view = F.normalize(net.embed(augment(pool, gen, CHECK_VIEWS)), dim=1)
    return float(((f_view @ f_pool.T).argmax(1) == torch.arange(len(pool))).float().mean())


def check_ssl_judge(judge: SSLJudge, cfg: EvalConfig) -> None:
    """Raise `JudgeError` naming every failed quality rule (useless features)."""
    q, problems = judge.quality, []
    if not q.get("separation", math.nan) >= MIN_SEPARATION:  # NaN (constant features) fails
        problems.append(f"real-vs-noise separation {q.get('separation', math.nan):.3g} is below "
                        f"{MIN_SEPARATION} (its features barely tell the images from noise)")
    retrieval, base = q.get("retrieval_accuracy", 0.0), q.get("untrained_retrieval_accuracy", 1.0)
    if cfg.min_ssl_retrieval > 0 and not retrieval >= cfg.min_ssl_retrieval:
        problems.append(f"view retrieval {q.get('retrieval_accuracy', 0.0):.3f} is below "
                        f"eval.min_ssl_retrieval={cfg.min_ssl_retrieval}")
    if cfg.min_ssl_retrieval > 0 and not retrieval >= base + MIN_GAIN:
        problems.append(f"view retrieval {q.get('retrieval_accuracy', 0.0):.3f} is not "
                        f"{MIN_GAIN} above the untrained encoder's {base:.3f} (it learnt "
                        "nothing)")
    if "knn_accuracy" in q and cfg.min_ssl_knn_accuracy > 0:
        problems += _knn_problems(q, cfg.min_ssl_knn_accuracy)
    if problems:
        raise JudgeError(f"label-free judge for dataset version {judge.dataset_version!r} "
                         f"({judge.epochs} epochs) has useless features: {'; '.join(problems)}"
                         " — it cannot be trusted to score generators (raise "
                         "eval.ssl_judge_epochs)")


def _knn_problems(q: dict[str, float], floor: float) -> list[str]:
    acc, chance = q["knn_accuracy"], q.get("knn_chance", 0.0)
    lift = chance + MIN_KNN_LIFT * (1 - chance)
    if not acc >= floor:
        return [f"5-NN holdout accuracy {acc:.3f} is below eval.min_ssl_knn_accuracy={floor}"]
    if not acc >= lift:
        return [f"5-NN holdout accuracy {acc:.3f} is not {MIN_KNN_LIFT} of the way from chance "
                f"({chance:.3f}, the largest class's share) to 1: {lift:.3f} (its features "
                "barely see the classes)"]
    return []


# --------------------------------------------------------------------------- cache


def ssl_to_bytes(judge: SSLJudge) -> tuple[bytes, dict[str, Any]]:
    """(safetensors weights, ssl_judge.json document)."""
    state = {k: v.detach().contiguous() for k, v in judge.net.state_dict().items()}
    weights = safetensors.torch.save(state)
    meta = {"format": SSL_FORMAT, "kind": SSLJudge.kind, "dataset_version": judge.dataset_version,
            "quality": judge.quality, "arch": asdict(judge.net.arch), "seed": judge.seed,
            "epochs": judge.epochs, "train_seconds": round(judge.train_seconds, 3),
            "recipe": asdict(judge.recipe) if judge.recipe else None,
            "weights_file": WEIGHTS_FILE,
            "weights_sha256": hashlib.sha256(weights).hexdigest(),
            "torch_version": torch.__version__}
    return weights, meta


def ssl_from_bytes(weights: bytes, meta: dict[str, Any], where: str = "ssl judge") -> SSLJudge:
    """Rebuild from weights and JSON; JudgeError on a format, checksum or shape mismatch."""
    check_cached_blob(weights, meta, fmt=SSL_FORMAT, meta_file=META_FILE, where=where)
    try:
        net = SSLNet(SSLArch(**meta["arch"]))
        net.load_state_dict(safetensors.torch.load(weights))
    except (KeyError, TypeError, RuntimeError, ValueError) as e:
        raise JudgeError(f"{where}: cannot rebuild the label-free judge: {e}") from e
    net.eval()
    return SSLJudge(net=net, quality=dict(meta["quality"]),
                    dataset_version=str(meta["dataset_version"]), seed=int(meta["seed"]),
                    epochs=int(meta["epochs"]),
                    train_seconds=float(meta.get("train_seconds", 0.0)), meta=meta)
