"""Judge validation: does the judge's score worsen, beyond its own noise, as images worsen?

What this module is: the FID paper's check (Heusel et al. 2017, §4) of a metric, applied to
this project's judges (`gan.eval.judge`, `gan.eval.ssl_judge`, or any object with a
`features(images) → (N, F)` method):
  - `Sweep`: one disturbance's metric value per strength and repeat, with `monotone()`
    (every step worsens the mean) and `separated(k)` (every step worsens it by more than k
    times the metric's own noise: √(std_a² + std_b²) of the two strengths' values over
    repeats, each repeat an independent draw of images and disturbance);
  - `disturbance_sweeps`: blur, noise, colour cast, swirl (on images drawn from the real
    `pool`), dropped classes and collapse (sets drawn from it), FID against the `reference`
    images; `copy_sweeps`: training images mixed into fresh ones, scored by the copy
    statistic of the gate (`gan.eval.metrics.copy_stats`' copy_fraction) and, for the record,
    by FID (which is not meant to see copying);
  - `reference_judge`: the independent scorer — the classifier judge's own network and
    training (`gan.eval.judge.train_judge`) on many more labelled images than a run sees;
  - `judge_sweeps`: all of them for one judge on a labelled `PreparedData` (disturbances of
    its train split against its holdout split); `prepared_from_arrays`: such a set made in
    memory (the painted digits, the shapes);
  - control judges that must FAIL some of these checks (`ColourOnlyJudge`, `random_judge`),
    so that a passing judge means something.

Features are computed once per image set and FID is torchmetrics' (`gan.eval.metrics.fid`)
over a pass-through feature module, so a sweep costs one feature pass per draw.

What it is not: no generators or rank correlations (`gan.eval.ordering`), no judge training
beyond the reference, no files, no printing.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import Tensor, nn

from gan.core.images import from_uint8
from gan.data.prepare import PreparedData
from gan.eval import disturb as D
from gan.eval import metrics as M
from gan.eval.judge import Judge, set_feature_scale, train_judge
from gan.nets.judge_net import JudgeArch, JudgeNet

STEP_Z = 1.0  # a sweep's step passes when its rise exceeds this many times its noise


class FeatureJudge(Protocol):
    """Anything that maps images (N, C, H, W) in [-1, 1] to features (N, F)."""

    def features(self, images: Tensor, batch_size: int = 512) -> Tensor: ...


@dataclass(frozen=True)
class Step:
    """One step of a sweep: from strength `a` to `b`; `rise` = mean(b) − mean(a)."""

    a: float
    b: float
    rise: float
    noise: float  # √(std_a² + std_b²) over repeats

    @property
    def z(self) -> float:
        """rise / noise (inf for a rise with no measurable noise)."""
        if self.noise > 0:
            return self.rise / self.noise
        return math.inf if self.rise > 0 else (0.0 if self.rise == 0 else -math.inf)


@dataclass(frozen=True)
class Sweep:
    """A metric (higher = worse) per strength (in the order of growing disturbance) and
    repeat: `values[i][r]`."""

    disturbance: str
    metric: str
    strengths: tuple[float, ...]
    values: tuple[tuple[float, ...], ...]

    @property
    def means(self) -> tuple[float, ...]:
        return tuple(statistics.fmean(v) for v in self.values)

    @property
    def stds(self) -> tuple[float, ...]:
        return tuple(statistics.stdev(v) if len(v) > 1 else 0.0 for v in self.values)

    def steps(self) -> tuple[Step, ...]:
        m, s = self.means, self.stds
        return tuple(Step(self.strengths[i], self.strengths[i + 1], m[i + 1] - m[i],
                          math.hypot(s[i], s[i + 1])) for i in range(len(m) - 1))

    def monotone(self) -> bool:
        """Every step worsens the mean metric."""
        return all(st.rise > 0 for st in self.steps())

    def separated(self, k: float) -> bool:
        """Every step worsens the mean by more than k × its noise."""
        return all(st.z > k for st in self.steps())

    def problems(self, k: float) -> list[str]:
        """Human-readable failed steps (empty when `separated(k)`)."""
        return [f"{self.disturbance}: {self.metric} {st.a:g} → {st.b:g} rose {st.rise:+.4g} "
                f"(noise {st.noise:.3g}, z {st.z:.2f} ≤ {k})"
                for st in self.steps() if not st.z > k]


# --------------------------------------------------------------------------- features, FID


class _PassThrough(nn.Module):
    """Features in, features out: torchmetrics' FID over precomputed (N, F) features."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, f: Tensor) -> Tensor:
        return f


def fid_of_features(real: Tensor, fake: Tensor) -> float:
    """`gan.eval.metrics.fid` on precomputed features (N, F) and (M, F)."""
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be (N, F) alike, got {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}")
    return M.fid(_PassThrough(real.shape[1]), real.double(), fake.double())


def _gen(seed: int, *stream: int) -> torch.Generator:
    value = seed
    for part in stream:  # a fixed mixing (Python's hash of a tuple is not a promise)
        value = (value * 1_000_003 + part + 1) % (2**62)
    return torch.Generator().manual_seed(value)


def sweep(disturbance: str, strengths: Sequence[float],
          draw: Callable[[float, torch.Generator], Tensor], score: Callable[[Tensor], float],
          *, repeats: int, seed: int, metric: str = "fid") -> Sweep:
    """`score(draw(strength, gen))` for each strength and repeat, each with its own seeded
    generator (independent draws: the spread over repeats is the metric's noise)."""
    if repeats < 2:
        raise ValueError(f"a sweep needs at least 2 repeats to measure its noise, got {repeats}")
    values = tuple(tuple(score(draw(s, _gen(seed, i, r))) for r in range(repeats))
                   for i, s in enumerate(strengths))
    return Sweep(disturbance, metric, tuple(float(s) for s in strengths), values)


def disturbance_sweeps(judge: FeatureJudge, pool: Tensor, labels: Tensor, reference: Tensor,
                       *, n: int, repeats: int = 4, seed: int = 0,
                       only: Sequence[str] | None = None) -> list[Sweep]:
    """FID (against `reference` (M, C, H, W)) of n images drawn from `pool` (N, C, H, W) with
    `labels` (N,): per image disturbance of `disturb.IMAGE_DISTURBANCES`, then dropped classes
    (`disturb.kept_classes`) and collapse (`disturb.COLLAPSE_STRENGTHS`). `only` picks some."""
    if len(pool) < n:
        raise ValueError(f"the pool has {len(pool)} images, fewer than n={n}")
    ref = judge.features(reference)  # (M, F), once

    def score(images: Tensor) -> float:
        return fid_of_features(ref, judge.features(images))

    def subset(gen: torch.Generator) -> Tensor:
        return pool[torch.randperm(len(pool), generator=gen)[:n]]

    ladders: dict[str, tuple[Sequence[float], Callable[[float, torch.Generator], Tensor]]] = {}
    for name, (fn, strengths) in D.IMAGE_DISTURBANCES.items():
        ladders[name] = (strengths, lambda s, g, fn=fn: fn(subset(g), s, g))
    num_classes = len(torch.unique(labels))
    ladders["drop_classes"] = (D.kept_classes(num_classes),
                               lambda k, g: D.drop_classes(pool, labels, int(k), n, g))
    ladders["collapse"] = (D.COLLAPSE_STRENGTHS, lambda s, g: D.collapse(pool, s, n, g))
    names = list(ladders) if only is None else list(only)
    unknown = set(names) - set(ladders)
    if unknown:
        raise ValueError(f"unknown disturbances {sorted(unknown)}; known: {sorted(ladders)}")
    return [sweep(name, ladders[name][0], ladders[name][1], score, repeats=repeats, seed=seed)
            for name in names]


def copy_sweeps(judge: FeatureJudge, train: Tensor, holdout: Tensor, *, repeats: int = 4,
                seed: int = 0, shares: Sequence[float] = D.COPY_SHARES) -> tuple[Sweep, Sweep]:
    """(copy_fraction sweep, FID sweep) of samples that are fresh images with a growing share
    of training images (`disturb.with_copies`). Each repeat splits `holdout` at random in two
    halves: one is the copy statistic's holdout (and FID's reference), the other the fresh
    "samples"; `train` (N, C, H, W) is what a generator would have copied."""
    if len(holdout) < 20:
        raise ValueError(f"the copy check needs at least 20 holdout images, got {len(holdout)}")
    f_train, f_hold = judge.features(train), judge.features(holdout)  # (N, F), (M, F)
    half = len(holdout) // 2
    copy_vals, fid_vals = [], []
    for i, share in enumerate(shares):
        cv, fv = [], []
        for r in range(repeats):
            g = _gen(seed, i, r)
            perm = torch.randperm(len(holdout), generator=g)
            ref, fresh = perm[:half], perm[half:2 * half]
            samples = D.with_copies(holdout[fresh], train, share, g)
            f_s = judge.features(samples)
            cv.append(M.copy_stats(f_train, f_hold[ref], f_s)["copy_fraction"])
            fv.append(fid_of_features(f_hold[ref], f_s))
        copy_vals.append(tuple(cv))
        fid_vals.append(tuple(fv))
    s = tuple(float(x) for x in shares)
    return (Sweep("copies", "copy_fraction", s, tuple(copy_vals)),
            Sweep("copies", "fid", s, tuple(fid_vals)))


# --------------------------------------------------------------------------- reference judge


def reference_judge(x: Tensor, y: Tensor, x_check: Tensor, y_check: Tensor, num_classes: int,
                    *, epochs: int, seed: int = 0, name: str = "reference") -> Judge:
    """The classifier judge's network and training (`train_judge`) on labelled images x (N,
    C, H, W), y (N,); its `accuracy` is measured on (x_check, y_check) — which may overlap x
    where no more labelled images exist (then it is a training accuracy: say so)."""
    data = PreparedData(x_train=x, y_train=y.long(), x_holdout=x_check,
                        y_holdout=y_check.long(), num_classes=num_classes, name=name,
                        version=name)
    return train_judge(data, epochs, seed)


# --------------------------------------------------------------------------- control judges


class ColourOnlyJudge:
    """A control that must fail: features are each channel's pixel-value histogram
    (`bins` bins over [-1, 1]) and mean — what an encoder that matches views by colour alone
    keeps. It is blind to shape: swirled, shuffled or class-dropped images look the same."""

    def __init__(self, bins: int = 16) -> None:
        self.bins = bins

    def features(self, images: Tensor, batch_size: int = 512) -> Tensor:
        x = images.float().flatten(2)  # (N, C, H·W)
        edges = torch.linspace(-1, 1, self.bins + 1)[1:-1]
        idx = torch.bucketize(x.clamp(-1, 1), edges)  # (N, C, H·W) in 0..bins-1
        hist = torch.zeros(*x.shape[:2], self.bins).scatter_add_(2, idx, torch.ones_like(x))
        hist = hist / x.shape[2]  # (N, C, bins) shares
        return torch.cat([hist.flatten(1), x.mean(2)], dim=1)  # (N, C·(bins + 1))


def random_judge(data: PreparedData, seed: int = 0) -> Judge:
    """A control: the classifier judge's network at its random initialisation (features
    scaled as a trained judge's), never trained."""
    _, c, h, _ = data.x_train.shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = JudgeNet(JudgeArch(channels=c, image_size=h, num_classes=max(data.num_classes, 2)))
    net.eval()
    set_feature_scale(net, data.x_train)
    return Judge(net=net, accuracy=0.0, dataset_version=data.version, seed=seed, epochs=0)


# --------------------------------------------------------------------------- in-memory sets


def prepared_from_arrays(images: np.ndarray, labels: np.ndarray, *, name: str,
                         holdout_fraction: float = 0.2, seed: int = 0) -> PreparedData:
    """A labelled image set made in memory (e.g. `gan.data.painted.render_painted`) as a
    `PreparedData`: images (N, H, W, C) uint8 → float32 (N, C, H, W) in [-1, 1], split
    stratified by `labels` (N,) with `holdout_fraction` held out; version = `name`."""
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"images must be (N, H, W, C) uint8 beside N labels, got "
                         f"{images.dtype} {images.shape} and {len(labels)} labels")
    x = from_uint8(torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))))
    y = torch.from_numpy(labels.astype(np.int64))
    tr, ho = train_test_split(np.arange(len(y)), test_size=holdout_fraction,
                              stratify=labels, random_state=seed)
    tr, ho = torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(ho))
    return PreparedData(x_train=x[tr], y_train=y[tr], x_holdout=x[ho], y_holdout=y[ho],
                        num_classes=int(labels.max()) + 1, name=name, version=name)


def judge_sweeps(judge: FeatureJudge, data: PreparedData, *, n: int, repeats: int = 4,
                 seed: int = 0) -> list[Sweep]:
    """Every sweep of a judge on a labelled dataset: the disturbances of its train split
    (`disturbance_sweeps`, FID against the holdout split), then the copy sweeps."""
    sweeps = disturbance_sweeps(judge, data.x_train, data.y_train, data.x_holdout, n=n,
                                repeats=repeats, seed=seed)
    return [*sweeps, *copy_sweeps(judge, data.x_train, data.x_holdout, repeats=repeats,
                                  seed=seed)]
