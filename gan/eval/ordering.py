"""Checkpoint ordering: does a judge rank generators as an independent reference does?

What this module is:
  - `Sampler`: a generator as the check sees it, `(n, seed) → images (n, C, H, W)`;
    `generator_sampler` wraps a trained G (`gan.nets.models.sample_images`, labels in the real
    class shares for a conditional G), `blurred`, `collapsed` and `swirled` make clearly worse
    ones from it (its output blurred; a pool of a few latents repeated; its shapes twisted,
    its colours kept);
  - `ladder_recipe` / `train_ladder`: one real training run with the project's own loop
    (`gan.train.loop.train_local`, CPU), its generator snapshotted after given epochs — early
    and late checkpoints of one run — plus the blurred and the collapsed late generator;
  - `sample_all` / `score_samples`: each sampler's images over several latent seeds, drawn
    once, and their FID against reference images in a judge's feature space (mean, std);
  - `rank_agreement`: Kendall's τ between a judge's and the reference's orderings over the
    pairs the reference separates beyond its own noise (|Δmean| > k·√(std_a² + std_b²) over
    latent seeds; with several references — training seeds — all must separate the pair the
    same way: `kept_pairs`), with scipy's τ-b over all generators beside it.

What it is not: no disturbances (`gan.eval.disturb`), no sweeps (`gan.eval.validation`), no
files. The τ over kept pairs is hand-written (a pair count; scipy's `kendalltau` has no notion
of "pairs the reference can tell apart"); it equals scipy's τ when every pair is kept.
"""

from __future__ import annotations

import copy
import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from scipy.stats import kendalltau
from torch import Tensor, nn

from gan.core.config import ModelConfig, TrainConfig, resolve_configs
from gan.data.prepare import PreparedData
from gan.eval import disturb as D
from gan.eval.validation import FeatureJudge, fid_of_features
from gan.nets.models import sample_images
from gan.train.loop import train_local
from gan.train.state import make_state

Sampler = Callable[[int, int], Tensor]  # (n, seed) → (n, C, H, W) in [-1, 1]
BLUR_SIGMA = 1.5  # pixels: the blurred generator's blur
COLLAPSE_POOL = 4  # distinct latents of the collapsed generator
SWIRL_ANGLE = 3.0  # radians at the centre: the swirled generator's twist


def generator_sampler(G: nn.Module, class_shares: Tensor | None = None) -> Sampler:
    """A trained G as a sampler; a conditional G (`G.conditional`) draws labels with
    the real `class_shares` (K,) — required then."""
    conditional = bool(getattr(G, "conditional", False))
    if conditional and class_shares is None:
        raise ValueError("a conditional generator needs the real class shares to draw labels")

    def sample(n: int, seed: int) -> Tensor:
        labels = None
        if conditional:
            gen = torch.Generator().manual_seed(seed + 7919)  # labels apart from z
            labels = torch.multinomial(class_shares.double(), n, replacement=True,  # type: ignore[union-attr]
                                       generator=gen)
        return sample_images(G, n, seed, labels).clamp(-1.0, 1.0)

    return sample


def blurred(sampler: Sampler, sigma: float = BLUR_SIGMA) -> Sampler:
    """The sampler's images blurred (`disturb.blur`, σ pixels)."""
    return lambda n, seed: D.blur(sampler(n, seed), sigma)


def swirled(sampler: Sampler, angle: float = SWIRL_ANGLE) -> Sampler:
    """The sampler's images swirled (`disturb.swirl`): colours kept, shapes twisted — what a
    judge that sees only colour cannot tell from the original."""
    return lambda n, seed: D.swirl(sampler(n, seed), angle)


def collapsed(sampler: Sampler, pool: int = COLLAPSE_POOL) -> Sampler:
    """A collapsed generator: the same `pool` images (one fixed draw of the sampler), each
    repeated equally often, shuffled by the seed."""
    images = sampler(pool, 0)  # (pool, C, H, W): the whole of its repertoire

    def sample(n: int, seed: int) -> Tensor:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        return images[torch.arange(n) % pool][order]  # (n, C, H, W)

    return sample


def ladder_recipe(data: PreparedData, *, seed: int = 0) -> tuple[ModelConfig, TrainConfig]:
    """The ladder's run: an unconditional DCGAN of width 8 (the `default` preset's losses and
    spectral norm) shaped to `data`, batch 32, EMA 0.9, at a brisk learning rate (1e-3: on the
    digits its FID falls from ≈ 200 to ≈ 5 within 5 epochs, so a few epochs give checkpoints
    of clearly different quality); `train_ladder` sets the epochs."""
    _, c, h, _ = data.x_train.shape
    return resolve_configs(
        "default",
        model={"conditional": False, "base_channels": 8, "latent_dim": 16, "channels": c,
               "image_size": h},
        train={"epochs": 1, "batch_size": 32, "ema_decay": 0.9, "mode_seeking": 0.0,
               "lr_g": 1e-3, "lr_d": 1e-3, "seed": seed, "checkpoint_every": 1})


def train_ladder(data: PreparedData, model_cfg: ModelConfig, train_cfg: TrainConfig,
                 epochs: Sequence[int]) -> dict[str, Sampler]:
    """One run of `train_cfg` (its own `epochs` is ignored) snapshotted after each of `epochs`
    (increasing): {"epoch_<e>": ...}, then "blurred", "collapsed" and "swirled" made from the
    last."""
    if not epochs or list(epochs) != sorted(set(epochs)) or epochs[0] < 1:
        raise ValueError(f"epochs must be increasing positive numbers, got {list(epochs)}")
    shares = torch.bincount(data.y_train, minlength=data.num_classes).double()
    state = make_state(model_cfg, train_cfg)
    out: dict[str, Sampler] = {}
    with torch.random.fork_rng(devices=[]):
        for e in epochs:
            state = train_local(data, model_cfg, train_cfg.model_copy(update={"epochs": e}),
                                state=state)
            G = copy.deepcopy(state.generator).eval()
            out[f"epoch_{e}"] = generator_sampler(G, shares / shares.sum())
    last = out[f"epoch_{epochs[-1]}"]
    out["blurred"] = blurred(last)
    out["collapsed"] = collapsed(last)
    out["swirled"] = swirled(last)
    return out


@dataclass(frozen=True)
class Score:
    """A generator's FID over latent seeds."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


def sample_all(samplers: dict[str, Sampler], *, n: int, seeds: Sequence[int]
               ) -> dict[str, list[Tensor]]:
    """Every sampler's images per seed, drawn once so that several judges score the same."""
    return {name: [s(n, seed) for seed in seeds] for name, s in samplers.items()}


def score_samples(judge: FeatureJudge, reference: Tensor, samples: dict[str, list[Tensor]]
                  ) -> dict[str, Score]:
    """Each generator's FID per seed (images drawn by `sample_all`) against `reference`
    (M, C, H, W), in `judge`'s features."""
    ref = judge.features(reference)  # (M, F)
    return {name: Score(tuple(fid_of_features(ref, judge.features(x)) for x in xs))
            for name, xs in samples.items()}


@dataclass(frozen=True)
class Agreement:
    """A judge's ordering against the reference's."""

    tau: float  # over the kept pairs: (concordant − discordant) / kept; NaN when none kept
    kept: int  # pairs the reference separates beyond k × its noise
    pairs: int  # all pairs
    discordant: tuple[tuple[str, str], ...]  # kept pairs the judge orders the other way
    tau_b_all: float  # scipy.stats.kendalltau (τ-b) over all generators, for the record


def separated(a: Score, b: Score, k: float) -> bool:
    """The two means differ by more than k × √(std_a² + std_b²)."""
    return abs(a.mean - b.mean) > k * math.hypot(a.std, b.std)


def kept_pairs(references: Sequence[dict[str, Score]], k: float
               ) -> list[tuple[str, str, float]]:
    """(a, b, sign of FID_a − FID_b) for every pair that each reference separates (k × its
    sampling noise) in the same direction: with references of different training seeds,
    a pair their training noise can flip is dropped too."""
    names = sorted(references[0])
    if any(sorted(r) != names for r in references) or len(names) < 2:
        raise ValueError("the references must score the same ≥ 2 generators")
    out = []
    for a, b in itertools.combinations(names, 2):
        signs = {math.copysign(1, r[a].mean - r[b].mean) for r in references}
        if len(signs) == 1 and all(separated(r[a], r[b], k) for r in references):
            out.append((a, b, signs.pop()))
    return out


def rank_agreement(reference: dict[str, Score] | Sequence[dict[str, Score]],
                   judge: dict[str, Score], *, k: float = 2.0) -> Agreement:
    """Kendall's τ of the judge's FIDs against the reference's over the pairs the reference
    (every one given, e.g. two training seeds) separates (`kept_pairs`, k); a tie of the judge
    counts as discordant. τ-b over all generators is against the first reference."""
    refs = [reference] if isinstance(reference, dict) else list(reference)
    names = sorted(refs[0])
    if sorted(judge) != names or len(names) < 2:
        raise ValueError(f"both need the same ≥ 2 generators, got {names} and {sorted(judge)}")
    pairs = kept_pairs(refs, k)
    bad = [(a, b) for a, b, sign in pairs if (judge[a].mean - judge[b].mean) * sign <= 0]
    tau = (len(pairs) - 2 * len(bad)) / len(pairs) if pairs else math.nan
    res = kendalltau([refs[0][x].mean for x in names], [judge[x].mean for x in names])
    return Agreement(tau=tau, kept=len(pairs), pairs=len(names) * (len(names) - 1) // 2,
                     discordant=tuple(bad), tau_b_all=float(res.statistic))
