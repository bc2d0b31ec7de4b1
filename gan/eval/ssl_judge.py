"""The label-free judge: a self-supervised encoder whose features are the metric space.

What this module is: `SSLJudge` (an `SSLNet` from `gan.nets.ssl_net`, in eval mode, and its
quality numbers), its deterministic SimCLR-style training on a dataset's train split
(`train_ssl_judge`: two augmented views of each image — random resized crop and shift,
Gaussian pixel noise — pulled together by the NT-Xent loss of Chen et al. 2020), its quality
check (`ssl_quality`, `check_ssl_judge`, raising `JudgeError`) and its (de)serialisation
(`ssl_judge.{safetensors,json}`); which judge a dataset gets and the cache are
`gan.eval.judge_ladder`'s.

The quality check, on the holdout split (never trained on):
  - view retrieval: for up to `RETRIEVAL_POOL` holdout images, the share whose augmented view
    has its own original as nearest neighbour among them (cosine); the same encoder untrained
    scores about 0.4 on digits, trained about 0.8: at least `eval.min_ssl_retrieval`, and
    `MIN_GAIN` above the same network untrained (same seed), which on easy data such as the
    bundled digits already has usable random features: an encoder that learnt nothing is
    refused whatever the data (both off with `eval.min_ssl_retrieval` = 0: the smoke preset);
  - separation: the Fréchet distance holdout-vs-uniform-noise over holdout-vs-train; a
    collapsed or constant encoder gives 0/0 (fails), useful features ≫ `MIN_SEPARATION`;
  - where the data has labels: 5-NN holdout accuracy against the train features,
    `eval.min_ssl_knn_accuracy` (tests, labelled data under `eval.judge='self-supervised'`).

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
from gan.nets.ssl_net import SSLArch, SSLFeatureExtractor, SSLNet

if TYPE_CHECKING:
    from gan.data.prepare import PreparedData

SSL_FORMAT = 1
WEIGHTS_FILE = "ssl_judge.safetensors"
META_FILE = "ssl_judge.json"
RETRIEVAL_POOL = 256  # holdout images the retrieval check searches among (size-independent)
MIN_SEPARATION = 10.0  # FD(holdout, noise) / FD(holdout, train): useful features ≫ 10
MIN_GAIN = 0.1  # retrieval must beat the untrained encoder's by this much
KNN_K = 5
TEMPERATURE = 0.5  # NT-Xent temperature (SimCLR's value for small batches)
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


def augment(x: Tensor, gen: torch.Generator, *, min_scale: float = 0.7, shift: float = 0.1,
            noise: float = 0.1) -> Tensor:
    """One random view per image: crop of side `min_scale`..1 at a random place, resized back,
    shifted by up to `shift` of the width, plus Gaussian noise; (B, C, H, W) → same, in [-1, 1].

    Borders are replicated (the background of digit-like images). Hand-written on
    `affine_grid`/`grid_sample` so that it is batched and seeded by `gen` (torchvision's
    transforms draw from the global RNG, one image at a time).
    """
    b = len(x)
    scale = torch.empty(b).uniform_(min_scale, 1.0, generator=gen)  # (B,) crop side share
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    for row in (0, 1):  # the crop's centre anywhere inside the image, then a small shift
        place = (torch.rand(b, generator=gen) * 2 - 1) * (1 - scale)
        theta[:, row, 2] = place + (torch.rand(b, generator=gen) * 2 - 1) * shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)
    out = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    return (out + noise * torch.randn(out.shape, generator=gen)).clamp(-1.0, 1.0)


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = TEMPERATURE) -> Tensor:
    """SimCLR's loss: each of the 2B projections must pick its partner view among the other
    2B − 1; z1, z2 (B, P) → scalar."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, P)
    sim = (z @ z.T / temperature).fill_diagonal_(float("-inf"))  # (2B, 2B)
    n = len(z1)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])  # partner of each row
    return F.cross_entropy(sim, target)


def _check_images(data: PreparedData) -> tuple[int, int]:
    x = data.x_train
    if x.ndim != 4 or x.shape[2] != x.shape[3]:
        raise ValueError(f"dataset {data.name!r}: x_train must be (N, C, S, S), "
                         f"got {tuple(x.shape)}")
    if len(x) < 2 or len(data.x_holdout) < 2:
        raise ValueError(f"dataset {data.name!r}: the label-free judge needs at least 2 train "
                         f"and 2 holdout images, got {len(x)} and {len(data.x_holdout)}")
    return int(x.shape[1]), int(x.shape[2])


def train_ssl_judge(data: PreparedData, epochs: int, seed: int = 0, *, batch_size: int = 256,
                    lr: float = 2e-3) -> SSLJudge:
    """Train the encoder on `data`'s train split for `epochs` epochs, deterministic for a seed
    (CPU; the caller's global RNG is left alone); quality measured (`ssl_quality`), not checked.
    The channel count and image size come from the data."""
    if epochs < 1:
        raise ValueError(f"the label-free judge needs at least one epoch, got {epochs}")
    c, s = _check_images(data)
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        net = SSLNet(SSLArch(channels=c, image_size=s))
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        x = data.x_train.float()  # (N, C, S, S)
        # At least 8 steps an epoch: small datasets need the steps more than the negatives.
        batch_size = max(2, min(batch_size, len(x) // 8))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=epochs * -(-len(x) // batch_size))
        net.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=gen).split(batch_size):
                if len(idx) < 2:  # a last batch of one has no negatives (and breaks BatchNorm)
                    continue
                xb = x[idx]
                loss = nt_xent(net(augment(xb, gen)), net(augment(xb, gen)))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    net.eval()
    set_feature_scale(net, data.x_train)
    judge = SSLJudge(net=net, quality={}, dataset_version=data.version, seed=seed,
                     epochs=epochs, train_seconds=time.perf_counter() - start)
    judge.quality = ssl_quality(judge, data)
    return judge


@torch.no_grad()
def set_feature_scale(net: SSLNet, x_train: Tensor) -> None:
    """mean(f²) = 1 on the train split (KID's polynomial kernel is then well conditioned)."""
    raw = torch.cat([net.body(b) for b in x_train.float().split(512)])  # (N, F)
    net.feature_scale.fill_(float(raw.square().mean().clamp(min=1e-12).rsqrt()))


# --------------------------------------------------------------------------- quality


@torch.no_grad()
def ssl_quality(judge: SSLJudge, data: PreparedData) -> dict[str, float]:
    """retrieval_accuracy, separation (and its two distances), knn_accuracy where labels exist;
    see the module docstring. Deterministic (`QUALITY_SEED`)."""
    gen = torch.Generator().manual_seed(QUALITY_SEED)
    hold, train = data.x_holdout.float(), data.x_train.float()
    pool = hold[:RETRIEVAL_POOL]  # (P, C, S, S)
    f_pool = F.normalize(judge.features(pool), dim=1)  # (P, F)
    f_view = F.normalize(judge.features(augment(pool, gen)), dim=1)
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
        f_train = F.normalize(judge.features(train), dim=1)  # (N, F)
        f_hold = F.normalize(judge.features(hold), dim=1)  # (M, F)
        k = min(KNN_K, len(train))
        votes = data.y_train[(f_hold @ f_train.T).topk(k, dim=1).indices]  # (M, k)
        pred = torch.mode(votes, dim=1).values  # ties → the smallest label
        out["knn_accuracy"] = float((pred == data.y_holdout).float().mean())
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
        f_pool = F.normalize(net.features(pool), dim=1)  # (P, F)
        f_view = F.normalize(net.features(augment(pool, gen)), dim=1)
    return float(((f_view @ f_pool.T).argmax(1) == torch.arange(len(pool))).float().mean())


def check_ssl_judge(judge: SSLJudge, cfg: EvalConfig) -> None:
    """Raise `JudgeError` naming every failed quality rule (useless features)."""
    q, problems = judge.quality, []
    if not q.get("separation", math.nan) >= MIN_SEPARATION:  # NaN (constant features) fails
        problems.append(f"real-vs-noise separation {q.get('separation', math.nan):.3g} is below "
                        f"{MIN_SEPARATION} (its features barely tell digits from noise)")
    retrieval, base = q.get("retrieval_accuracy", 0.0), q.get("untrained_retrieval_accuracy", 1.0)
    if cfg.min_ssl_retrieval > 0 and not retrieval >= cfg.min_ssl_retrieval:
        problems.append(f"view retrieval {q.get('retrieval_accuracy', 0.0):.3f} is below "
                        f"eval.min_ssl_retrieval={cfg.min_ssl_retrieval}")
    if cfg.min_ssl_retrieval > 0 and not retrieval >= base + MIN_GAIN:
        problems.append(f"view retrieval {q.get('retrieval_accuracy', 0.0):.3f} is not "
                        f"{MIN_GAIN} above the untrained encoder's {base:.3f} (it learnt "
                        "nothing)")
    if "knn_accuracy" in q and not q["knn_accuracy"] >= cfg.min_ssl_knn_accuracy:
        problems.append(f"5-NN holdout accuracy {q['knn_accuracy']:.3f} is below "
                        f"eval.min_ssl_knn_accuracy={cfg.min_ssl_knn_accuracy}")
    if problems:
        raise JudgeError(f"label-free judge for dataset version {judge.dataset_version!r} "
                         f"({judge.epochs} epochs) has useless features: {'; '.join(problems)}"
                         " — it cannot be trusted to score generators (raise "
                         "eval.ssl_judge_epochs)")


# --------------------------------------------------------------------------- cache


def ssl_to_bytes(judge: SSLJudge) -> tuple[bytes, dict[str, Any]]:
    """(safetensors weights, ssl_judge.json document)."""
    state = {k: v.detach().contiguous() for k, v in judge.net.state_dict().items()}
    weights = safetensors.torch.save(state)
    meta = {"format": SSL_FORMAT, "kind": SSLJudge.kind, "dataset_version": judge.dataset_version,
            "quality": judge.quality, "arch": asdict(judge.net.arch), "seed": judge.seed,
            "epochs": judge.epochs, "train_seconds": round(judge.train_seconds, 3),
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
