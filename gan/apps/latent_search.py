"""Latent-space search: find z (and, for conditional generators, a class) with G(z) ≈ a target.

What this module is: the one optimiser that anomaly detection (AnoGAN, Schlegl et al. 2017)
and inpainting (Yeh et al. 2017) share. Each image gets one or more *candidates* — a start z,
and a label when the generator is conditional (the given label, or every class when none is
given) — and Adam minimises a per-candidate objective over z with G and D frozen; per image
the candidate with the lowest final objective wins.

    result = search(G, objective, n_images, labels=None, cfg=SearchConfig(), progress=cb)

Batched over candidates: Adam's update is elementwise, so minimising the SUM of per-candidate
losses moves each z exactly as its own loss alone would; G and D stay in eval mode (BatchNorm
uses running statistics), so candidates never interact and the batch size changes nothing but
speed. Seeded: the start latents come from a CPU generator seeded by `search_seed(cfg.seed)`.

What it is not: no objective of its own (see `gan.apps.anomaly`, `gan.apps.inpaint`), no I/O, no
printing (`progress(done, total)` lets the caller draw a bar).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
from pydantic import Field
from torch import Tensor, nn

from gan.core.config import Frozen
from gan.nets.models import Generator, sample_latent

Progress = Callable[[int, int], None]  # (steps done, total steps)


class SearchConfig(Frozen):
    """Knobs of the z search (the same for every application)."""

    steps: int = Field(100, ge=1, le=10_000, description="Adam steps per candidate.")
    # 0.1: on the default digits generator, 100 steps reached a mean AnoGAN objective of 48.6
    # (from 187) at lr 0.1 against 58.1 at lr 0.05.
    lr: float = Field(0.1, gt=0.0, le=10.0, description="Adam learning rate on z.")
    restarts: int = Field(1, ge=1, le=64, description="Start latents per image (and class).")
    batch_size: int = Field(512, ge=1, le=65_536, description="Candidates optimised together.")
    seed: int = Field(0, ge=0, description="Seed of the start latents.")


class Objective(Protocol):
    """Per-candidate loss: gz (B, C, H, W) = G(z, y); rows (B,) = image index of each candidate;
    z (B, latent_dim); y (B,) labels or None. Returns (B,) losses (lower = better explained)."""

    def __call__(self, gz: Tensor, rows: Tensor, z: Tensor, y: Tensor | None) -> Tensor: ...


@dataclass(frozen=True, eq=False)
class SearchResult:
    z: Tensor  # (N, latent_dim) best latent per image, CPU
    y: Tensor | None  # (N,) label of the best candidate (conditional generators), CPU
    loss: Tensor  # (N,) objective at the best candidate's final z, CPU
    history: list[float]  # mean objective over all candidates before each step; then the final


@contextlib.contextmanager
def frozen(*modules: nn.Module | None) -> Iterator[None]:
    """Eval mode and no parameter gradients inside the block; previous flags restored after."""
    mods = [m for m in modules if m is not None]
    saved = [(m.training, [p.requires_grad for p in m.parameters()]) for m in mods]
    for m in mods:
        m.eval().requires_grad_(False)
    try:
        yield
    finally:
        for m, (training, flags) in zip(mods, saved, strict=True):
            m.train(training)
            for p, f in zip(m.parameters(), flags, strict=True):
                p.requires_grad_(f)


def candidate_labels(G: Generator, n: int, labels: Tensor | None) -> Tensor | None:
    """(n, K) labels to try per image: the given one (K = 1), every class (K = num_classes),
    or None for an unconditional generator (labels are then ignored)."""
    if not G.conditional:
        return None
    if labels is not None:
        if labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
        if int(labels.min()) < 0 or int(labels.max()) >= G.num_classes:
            raise ValueError(f"labels must lie in [0, {G.num_classes}), found "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        return labels.long().view(n, 1)
    return torch.arange(G.num_classes).repeat(n, 1)  # (n, K)


def total_steps(G: Generator, n: int, labels: Tensor | None, cfg: SearchConfig) -> int:
    """Optimiser steps `search` will take (for a progress bar's total)."""
    cand = candidate_labels(G, n, labels)
    m = n * (1 if cand is None else cand.shape[1]) * cfg.restarts
    return cfg.steps * -(-m // cfg.batch_size)


def search_seed(seed: int) -> int:
    """The start latents' seed: a stream of its own, derived from `seed`.

    Why not `seed` itself: `gan sample --seed 0` draws its latents from torch's stream seeded
    with 0, so a search seeded with 0 would start from the very latents that made those images
    and score them 0.0 without searching (README's own example did exactly that)."""
    digest = hashlib.sha256(f"gan.latent_search:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def search(G: Generator, objective: Objective, n: int, *, labels: Tensor | None = None,
           cfg: SearchConfig | None = None, progress: Progress | None = None,
           modules: tuple[nn.Module | None, ...] = ()) -> SearchResult:
    """Minimise `objective` over z for n images; returns the best candidate per image.

    `modules`: other networks the objective runs (e.g. D), frozen like G during the search.
    """
    if n < 1:
        raise ValueError(f"latent search needs at least one image, got n={n}")
    cfg = cfg or SearchConfig()
    dev = next(G.parameters()).device
    cand = candidate_labels(G, n, labels)  # (n, K) or None
    k = 1 if cand is None else cand.shape[1]
    per_image = k * cfg.restarts
    m = n * per_image  # candidates, image-major: image i owns rows i·per_image … +per_image-1
    rows = torch.arange(n).repeat_interleave(per_image)  # (M,)
    ys = None if cand is None else cand.repeat_interleave(cfg.restarts, dim=1).reshape(m)
    gen = torch.Generator().manual_seed(search_seed(cfg.seed))
    z0 = sample_latent(m, G.latent_dim, gen)  # (M, latent_dim) on CPU: device-independent
    total = total_steps(G, n, labels, cfg)
    done = 0
    hist = torch.zeros(cfg.steps + 1, dtype=torch.float64)
    z_out, final = torch.empty_like(z0), torch.empty(m)
    with frozen(G, *modules):
        for lo in range(0, m, cfg.batch_size):
            sl = slice(lo, min(lo + cfg.batch_size, m))
            r = rows[sl].to(dev)
            y = None if ys is None else ys[sl].to(dev)
            z, losses = _optimise(G, objective, z0[sl].to(dev), r, y, cfg, progress, done, total)
            done += cfg.steps
            hist += losses
            z_out[sl], final[sl] = z.cpu(), losses_final(G, objective, z, r, y).cpu()
            hist[-1] += float(final[sl].sum())
    best = final.view(n, per_image).argmin(1)  # (n,)
    pick = torch.arange(n) * per_image + best
    return SearchResult(z=z_out[pick], y=None if ys is None else ys[pick], loss=final[pick],
                        history=(hist / m).tolist())


def _optimise(G: Generator, objective: Objective, z: Tensor, rows: Tensor, y: Tensor | None,
              cfg: SearchConfig, progress: Progress | None, done: int, total: int
              ) -> tuple[Tensor, Tensor]:
    """Adam on one chunk of latents; returns (z, (steps + 1,) summed losses before each step)."""
    z = z.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=cfg.lr)
    sums = torch.zeros(cfg.steps + 1, dtype=torch.float64)
    for s in range(cfg.steps):
        loss = objective(G(z, y), rows, z, y)  # (b,)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # each z gets its own gradient: the losses are independent
        opt.step()
        sums[s] = float(loss.detach().sum())
        if progress is not None:
            progress(done + s + 1, total)
    return z.detach(), sums


@torch.no_grad()
def losses_final(G: Generator, objective: Objective, z: Tensor, rows: Tensor,
                 y: Tensor | None) -> Tensor:
    """(b,) objective at z (no gradient)."""
    return objective(G(z, y), rows, z, y)


@torch.no_grad()
def render(G: Generator, result: SearchResult, batch: int = 1024) -> Tensor:
    """G(z*, y*) for a search result: (N, C, H, W) on CPU."""
    dev = next(G.parameters()).device
    out = []
    with frozen(G):
        for i in range(0, len(result.z), batch):
            y = None if result.y is None else result.y[i:i + batch].to(dev)
            out.append(G(result.z[i:i + batch].to(dev), y).float().cpu())
    return torch.cat(out)
