"""The judge: a small CNN classifier whose penultimate layer is the evaluation feature space.

What this module is: the judge (its network, `JudgeNet`, is in `gan.nets.judge_net`), its
deterministic training on a prepared dataset's train split (`train_judge`), its holdout-accuracy
check (`check_judge`, raising `JudgeError`), its (de)serialisation (`judge.safetensors` first,
`judge.json` last, so a reader that finds the JSON finds complete weights) and the two places a
cache keeps them (`StorageFiles` in object storage, `FolderFiles` in a local folder); the
pipeline's cache, keyed by the judge's settings, is `gan.eval.judge_ladder`, and `cached_judge`
here is the recipe runner's folder cache. Inception weights
cannot be downloaded here and do not fit 28×28 digits, so FID/KID/IS are computed in this
classifier's feature space.

What it is not: no metric math (see `gan.eval.metrics`), no pictures, no MLflow.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import Tensor

from gan.nets.judge_net import FeatureExtractor, JudgeArch, JudgeNet, LogitsExtractor

if TYPE_CHECKING:
    from gan.data.prepare import PreparedData
    from gan.io.storage import Storage

JUDGE_FORMAT = 1  # bump when judge.json's meaning changes; older caches are then retrained
WEIGHTS_FILE = "judge.safetensors"
META_FILE = "judge.json"
Log = Callable[[str], None]


class JudgeError(RuntimeError):
    """The judge cannot be trusted (holdout accuracy under the threshold) or its cache is bad."""


@dataclass
class Judge:
    """A trained judge (in eval mode) and what is known about it."""

    net: JudgeNet
    accuracy: float  # on the dataset's holdout split
    dataset_version: str
    seed: int
    epochs: int
    train_seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    kind: ClassVar[str] = "classifier"  # the label-free judge is "self-supervised"
    has_classes: ClassVar[bool] = True

    @property
    def quality(self) -> dict[str, float]:
        return {"holdout_accuracy": self.accuracy}

    @property
    def num_classes(self) -> int:
        return self.net.arch.num_classes

    def feature_module(self) -> FeatureExtractor:
        return FeatureExtractor(self.net)

    def logits_module(self) -> LogitsExtractor:
        return LogitsExtractor(self.net)

    @torch.no_grad()
    def features(self, images: Tensor, batch_size: int = 512) -> Tensor:
        """(N, C, H, W) → (N, F) float32."""
        return torch.cat([self.net.features(b.float()) for b in images.split(batch_size)])

    @torch.no_grad()
    def predict(self, images: Tensor, batch_size: int = 512) -> Tensor:
        """(N, C, H, W) → (N,) int64 predicted classes."""
        return torch.cat([self.net(b.float()).argmax(1) for b in images.split(batch_size)])


# --------------------------------------------------------------------------- training


def _random_shift(x: Tensor, max_shift: int, gen: torch.Generator) -> Tensor:
    """Shift each image by up to ±max_shift pixels (light augmentation); (B, C, H, W) → same.

    Border pixels are replicated, which for digit-like data is the background.
    """
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")  # (B, C, H+2s, W+2s)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (B, 1, W)
    out = padded.permute(0, 2, 3, 1)[torch.arange(b)[:, None, None], rows, cols]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def _validate_data(data: PreparedData) -> None:
    x, y = data.x_train, data.y_train
    if x.ndim != 4:
        raise ValueError(
            f"dataset {data.name!r}: x_train must be (N, C, H, W), got {tuple(x.shape)}"
        )
    if data.num_classes < 2:
        raise ValueError(
            f"dataset {data.name!r} has num_classes={data.num_classes}: the judge needs labels"
        )
    for split, xs, ys in (("train", x, y), ("holdout", data.x_holdout, data.y_holdout)):
        if len(xs) != len(ys) or len(xs) == 0:
            raise ValueError(
                f"dataset {data.name!r}: {split} split has {len(xs)} images and {len(ys)} labels"
            )
        if int(ys.min()) < 0 or int(ys.max()) >= data.num_classes:
            raise ValueError(
                f"dataset {data.name!r}: {split} labels outside [0, {data.num_classes})"
            )


def train_judge(
    data: PreparedData,
    epochs: int,
    seed: int = 0,
    *,
    arch: JudgeArch | None = None,
    batch_size: int = 64,
    lr: float = 2e-3,
    max_shift: int = 2,
) -> Judge:
    """Train a judge on `data`'s train split for `epochs` epochs (`eval.judge_epochs`);
    deterministic for a seed (CPU).

    Holdout accuracy is measured and stored on the judge; it is not checked here (see
    `check_judge`), so a bad judge can still be inspected.
    """
    if epochs < 1:
        raise ValueError(f"the judge needs at least one epoch, got {epochs}")
    _validate_data(data)
    _, c, h, w = data.x_train.shape
    if h != w:
        raise ValueError(f"dataset {data.name!r}: images must be square, got {h}×{w}")
    arch = arch or JudgeArch(channels=c, image_size=h, num_classes=data.num_classes)
    start = time.perf_counter()
    # A private RNG scope: the judge's init, dropout, shuffling and shifts depend on `seed` only,
    # and the caller's global RNG state is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        net = JudgeNet(arch)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        x, y = data.x_train.float(), data.y_train.long()
        steps = epochs * -(-len(x) // batch_size)
        # Cosine decay to zero: the last epochs settle instead of bouncing between minima.
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        net.train()
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=gen)
            for idx in order.split(batch_size):
                xb = _random_shift(x[idx], max_shift, gen) if max_shift else x[idx]
                loss = F.cross_entropy(net(xb), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
    net.eval()
    set_feature_scale(net, data.x_train)
    judge = Judge(net=net, accuracy=0.0, dataset_version=data.version, seed=seed,
                  epochs=epochs, train_seconds=time.perf_counter() - start)
    judge.accuracy = holdout_accuracy(judge, data)
    return judge


@torch.no_grad()
def set_feature_scale(net: JudgeNet, x_train: Tensor) -> None:
    """mean(f²) = 1 on the train split (N, C, H, W): KID's polynomial kernel is then well
    conditioned. Shared by training and the untrained control (`gan.eval.validation`)."""
    raw = torch.cat([net.body(b) for b in x_train.float().split(512)])  # (N, F)
    net.feature_scale.fill_(float(raw.square().mean().clamp(min=1e-12).rsqrt()))


def holdout_accuracy(judge: Judge, data: PreparedData) -> float:
    """Share of holdout images the judge classifies correctly."""
    pred = judge.predict(data.x_holdout)
    return float((pred == data.y_holdout.long()).float().mean())


def check_judge(judge: Judge, min_accuracy: float) -> None:
    """Raise `JudgeError` when the judge's holdout accuracy is under `min_accuracy`
    (`eval.min_judge_accuracy`)."""
    if not judge.accuracy >= min_accuracy:
        raise JudgeError(
            f"judge for dataset version {judge.dataset_version!r} has holdout accuracy "
            f"{judge.accuracy:.4f}, below eval.min_judge_accuracy={min_accuracy}: "
            "its features cannot be trusted to score generators"
        )


# --------------------------------------------------------------------------- (de)serialisation


def judge_to_bytes(judge: Judge) -> tuple[bytes, dict[str, Any]]:
    """(safetensors weights, judge.json document)."""
    state = {k: v.detach().contiguous() for k, v in judge.net.state_dict().items()}
    weights = safetensors.torch.save(state)
    meta = {
        "format": JUDGE_FORMAT,
        "dataset_version": judge.dataset_version,
        "holdout_accuracy": judge.accuracy,
        "arch": asdict(judge.net.arch),
        "seed": judge.seed,
        "epochs": judge.epochs,
        "train_seconds": round(judge.train_seconds, 3),
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "torch_version": torch.__version__,
    }
    return weights, meta


def check_cached_blob(weights: bytes, meta: dict[str, Any], *, fmt: int, meta_file: str,
                      where: str) -> None:
    """A cached judge's JSON has format `fmt` and its weights the recorded sha256; else
    JudgeError (both judges' caches: classifier and label-free)."""
    if meta.get("format") != fmt:
        raise JudgeError(f"{where}: {meta_file} format {meta.get('format')!r} != {fmt}")
    if hashlib.sha256(weights).hexdigest() != meta.get("weights_sha256"):
        raise JudgeError(f"{where}: weights do not match weights_sha256 in {meta_file}")


def judge_from_bytes(weights: bytes, meta: dict[str, Any], where: str = "judge") -> Judge:
    """Rebuild a judge from its safetensors weights and judge.json; JudgeError on mismatch."""
    check_cached_blob(weights, meta, fmt=JUDGE_FORMAT, meta_file=META_FILE, where=where)
    try:
        net = JudgeNet(JudgeArch(**meta["arch"]))
        net.load_state_dict(safetensors.torch.load(weights))
    except (KeyError, TypeError, RuntimeError) as e:
        raise JudgeError(f"{where}: cannot rebuild the judge: {e}") from e
    net.eval()
    return Judge(net=net, accuracy=float(meta["holdout_accuracy"]),
                 dataset_version=str(meta["dataset_version"]), seed=int(meta["seed"]),
                 epochs=int(meta["epochs"]), train_seconds=float(meta.get("train_seconds", 0.0)),
                 meta=meta)


# --------------------------------------------------------------------------- cache


class JudgeFiles(Protocol):
    """Where a judge cache keeps its two files (`judge.safetensors`, `judge.json`)."""

    where: str  # names the cache in messages

    def read(self, name: str) -> bytes | None:
        """The file's bytes, or None when it is absent."""

    def write(self, name: str, data: bytes) -> None: ...


@dataclass(frozen=True)
class StorageFiles:
    """A judge cache in object storage, under `prefix` (an s3:// URI)."""

    storage: Storage
    prefix: str

    @property
    def where(self) -> str:
        return self.prefix

    def read(self, name: str) -> bytes | None:
        uri = f"{self.prefix}/{name}"
        return self.storage.get_bytes(uri) if self.storage.exists(uri) else None

    def write(self, name: str, data: bytes) -> None:
        kind = "application/json" if name.endswith(".json") else "application/octet-stream"
        self.storage.put_bytes(f"{self.prefix}/{name}", data, kind)


@dataclass(frozen=True)
class FolderFiles:
    """A judge cache in a local folder (made on the first write)."""

    folder: Path

    @property
    def where(self) -> str:
        return str(self.folder)

    def read(self, name: str) -> bytes | None:
        path = self.folder / name
        return path.read_bytes() if path.exists() else None

    def write(self, name: str, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / name).write_bytes(data)


def judge_prefix(storage: Storage, dataset_version: str) -> str:
    """`s3://<bucket>/judges/<dataset_version>`."""
    return storage.settings.s3_uri("judges", dataset_version)


def _load_cached(files: JudgeFiles, key: dict[str, Any], log: Log) -> tuple[Judge | None, str]:
    """(the cached judge, "") or (None, why it cannot be used); `key`: meta values it must have.
    A cache that is there but unreadable is logged."""
    raw_meta = files.read(META_FILE)
    if raw_meta is None:
        return None, "no cached judge"
    meta = json.loads(raw_meta)
    if meta.get("format") != JUDGE_FORMAT:
        why = f"cached judge has format {meta.get('format')!r}, not {JUDGE_FORMAT}"
        log(f"cached judge unusable ({why}); retraining")
        return None, why
    cached = {k: meta.get(k) for k in key}
    if cached != key:
        return None, f"cached judge has {cached}, not {key}"
    weights = files.read(WEIGHTS_FILE)
    if weights is None:
        return None, "cached judge has no weights"
    try:
        return judge_from_bytes(weights, meta, files.where), ""
    except JudgeError as e:
        # e.g. another writer's weights landed between our read of the JSON and the weights.
        log(f"cached judge unusable ({e}); retraining")
        return None, str(e)


def cached_judge(files: JudgeFiles, data: PreparedData, *, epochs: int, min_accuracy: float,
                 seed: int = 0, same_epochs: bool = False, log: Log | None = None) -> Judge:
    """The judge of `data` cached in `files`, or a new one trained (`epochs`, `seed`), written
    there (weights first, JSON last: its presence means complete) and returned.

    The cached judge must be of `data.version` and `seed` (and, with `same_epochs`, of
    `epochs`). An unreadable cache, or a cached judge under `min_accuracy` after fewer epochs
    than asked (a smoke run's), is replaced. Raises `JudgeError` when the judge's accuracy is
    under `min_accuracy`; `judge.meta` says whether it was `reused` and why not.
    """
    log = log or _quiet
    key: dict[str, Any] = {"dataset_version": data.version, "seed": seed}
    if same_epochs:
        key["epochs"] = epochs
    judge, why = _load_cached(files, key, log)
    if judge is not None and judge.accuracy < min_accuracy and judge.epochs < epochs:
        why = (f"cached judge ({judge.epochs} epochs, accuracy {judge.accuracy:.4f}) is under "
               f"{min_accuracy}; retraining with {epochs} epochs")
        judge = None
    if judge is not None:
        judge.meta["reused"] = True
    else:
        judge = train_judge(data, epochs, seed)
        weights, meta = judge_to_bytes(judge)
        meta["dataset_name"] = data.name
        meta["n_train"], meta["n_holdout"] = len(data.x_train), len(data.x_holdout)
        files.write(WEIGHTS_FILE, weights)  # weights first ...
        files.write(META_FILE, json.dumps(meta, indent=2, sort_keys=True).encode())  # JSON last
        judge.meta = {**meta, "reused": False, "trained_because": why}
        log(f"judge trained: holdout accuracy {judge.accuracy:.4f} in {judge.train_seconds:.1f}s")
    check_judge(judge, min_accuracy)
    return judge


def _quiet(_line: str) -> None:
    pass
