"""One discriminator update and one generator update as pure functions, and G's weight EMA.

What this module is: `d_update` / `g_update` (metrics as detached 0-dim tensors, so the loop
converts them once per check instead of syncing every step) and `d_step` / `g_step` (the same,
returning python floats). They work on plain or DDP-wrapped G and D:
  * ONE D forward per D step, over real, fake (and, for WGAN-GP, interpolates) concatenated
    along the batch — a single DDP forward/backward, and no BN in D makes it exact;
  * the G step runs D's forward under `maybe_no_sync(D)` with D's parameters frozen, so D's
    gradients are neither computed nor all-reduced while G learns.
Conventions follow pytorch/examples `dcgan/main.py`: the D step uses `fake.detach()`.

What it is not: no epoch loop, no logging, no saving (see `gan.train.loop`, `gan.train.checkpoint`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from gan.train import losses
from gan.train.diffaug import diff_augment


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside a DDP (or similar) wrapper; the module itself otherwise."""
    return module.module if hasattr(module, "module") else module  # type: ignore[return-value]


def maybe_no_sync(module: nn.Module) -> contextlib.AbstractContextManager[Any]:
    """`module.no_sync()` for DDP-wrapped modules (skip the gradient all-reduce), else a no-op."""
    no_sync = getattr(module, "no_sync", None)
    return no_sync() if callable(no_sync) else contextlib.nullcontext()


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Parameters of `module` stop requiring grad inside the block (restored afterwards)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision (e.g. bf16 on GPU) when a dtype is given; a no-op otherwise."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def generate(
    G: nn.Module, z: Tensor, y: Tensor, autocast_dtype: torch.dtype | None = None
) -> Tensor:
    """G(z, y) → (B, C, H, W) with its graph, so one fake batch can serve the D and G steps."""
    with autocast(z.device, autocast_dtype):
        return G(z, y)


def d_update(
    G: nn.Module, D: nn.Module, opt_d: torch.optim.Optimizer, real: Tensor, y: Tensor, z: Tensor,
    *, loss: str, real_label: float, gp_weight: float, fake: Tensor | None = None,
    rng: torch.Generator | None = None, autocast_dtype: torch.dtype | None = None,
    augment: tuple[str, ...] = (), r1r2_gamma: float = 0.0,
) -> dict[str, Tensor]:
    """One D step on real (B, C, H, W) with labels y (B,) and fakes G(z, y).

    `loss`, `real_label` and `gp_weight` are `TrainConfig`'s fields of those names;
    `r1r2_gamma` is `TrainConfig.r1r2_gamma` at this step (the schedule's value).

    Objective (D minimises; see gan.train.losses):
      bce    -[0.9·log σ(D(x)) + 0.1·log(1-σ(D(x)))] - log(1 - σ(D(G(z))))
      ns     -log σ(D(x)) - log(1 - σ(D(G(z))))
      hinge  E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]
      wgan-gp  E[D(G(z))] - E[D(x)] + λ·E[(‖∇D(x̂)‖ - 1)²],  x̂ = εx + (1-ε)G(z)
      rpgan  E[softplus(-(D(x) - D(G(z))))]   (relativistic pairing: x and G(z) paired by index)
    plus, with γ = r1r2_gamma > 0 and any loss, (γ/2)·(E‖∇_x D(x)‖² + E‖∇ D(G(z))‖²) (R1 + R2,
    R3GAN's penalties, every step: the same single forward, its inputs requiring grad).
    Fakes are conditioned on the real batch's labels (the data's class balance). `augment`
    (`train.diffaugment` parsed): DiffAugment applied to real and fake alike before D, so
    D(x) reads D(T(x)) above (Zhao et al. 2020; `gan.train.diffaug`).
    """
    b = real.shape[0]
    with autocast(real.device, autocast_dtype):
        if fake is None:
            with torch.no_grad():
                fake = G(z, y)  # (B, C, H, W)
        parts = [real, fake.detach().to(real.dtype)]
        if r1r2_gamma > 0:  # R1/R2 differentiate D w.r.t. its (pre-augmentation) inputs
            parts = [p.detach().requires_grad_(True) for p in parts]
        inputs = tuple(parts)  # (real, fake), each (B, C, H, W)
        if augment:
            parts = [diff_augment(p, augment, rng) for p in parts]
        x_hat = None
        if loss == "wgan-gp":
            eps = torch.rand(b, 1, 1, 1, generator=rng, device=real.device)
            x_hat = (eps * parts[0] + (1 - eps) * parts[1]).requires_grad_(True)  # (B, C, H, W)
            parts.append(x_hat)
        # ONE forward over (2B or 3B, C, H, W): a single DDP all-reduce per D step.
        logits = D(torch.cat(parts), y.repeat(len(parts))).float()  # (2B|3B,)
    real_logits, fake_logits = logits[:b], logits[b : 2 * b]
    loss_d = losses.d_loss(loss, real_logits, fake_logits, real_label=real_label)
    metrics: dict[str, Tensor] = {}
    if x_hat is not None:
        gp = losses.gradient_penalty(logits[2 * b :], x_hat)
        loss_d = loss_d + gp_weight * gp
        metrics["gp"] = gp.detach()
    if r1r2_gamma > 0:
        r1, r2 = losses.r1r2_penalty(logits[: 2 * b], *inputs)
        loss_d = loss_d + 0.5 * r1r2_gamma * (r1 + r2)
        metrics["r1"], metrics["r2"] = r1.detach(), r2.detach()
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    metrics["loss_d"] = loss_d.detach()
    metrics["d_real"] = torch.sigmoid(real_logits.detach()).mean()  # mean σ(D(x))
    metrics["d_fake"] = torch.sigmoid(fake_logits.detach()).mean()  # mean σ(D(G(z)))
    return metrics


def g_update(
    G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer, z: Tensor, y: Tensor,
    *, loss: str, mode_seeking: float, fake: Tensor | None = None,
    autocast_dtype: torch.dtype | None = None, rng: torch.Generator | None = None,
    augment: tuple[str, ...] = (), real: Tensor | None = None,
) -> dict[str, Tensor]:
    """One G step; `fake` may be the batch the preceding D step saw (with its graph).
    `real` (B, C, H, W): the D step's real batch, needed by rpgan (D's logits on it pair with
    the fakes'; one D forward over both, D frozen, no gradient into the real images).
    `rng` draws the second latent batch of the mode-seeking term (the trainer's z stream);
    `loss` and `mode_seeking` (its weight; 0 = off) are `TrainConfig`'s fields of those names.

    Objective (G minimises): bce/ns  -log σ(D(G(z)))  (non-saturating);  hinge/wgan-gp  -E[D(G(z))];
    rpgan  E[softplus(-(D(G(z)) - D(x)))]
    (D(T(G(z))) with DiffAugment `augment`: the gradient flows through the augmentation).
    D is frozen and, under DDP, its forward runs in `no_sync`: only G's gradients are reduced.
    """
    with frozen(D), maybe_no_sync(D):
        with autocast(z.device, autocast_dtype):
            if fake is None:
                fake = G(z, y)  # (B, C, H, W)
            seen = diff_augment(fake, augment, rng) if augment else fake
            real_logits = None
            if loss == "rpgan":
                if real is None:
                    raise ValueError("loss rpgan: g_update needs the real batch (real=...)")
                real_seen = diff_augment(real, augment, rng) if augment else real
                b = seen.shape[0]
                both = D(torch.cat([seen, real_seen.to(seen.dtype)]), y.repeat(2)).float()
                logits, real_logits = both[:b], both[b:]  # (B,), (B,)
            else:
                logits = D(seen, y).float()  # (B,)
        loss_g = losses.g_loss(loss, logits, real_logits)
        metrics: dict[str, Tensor] = {}
        if mode_seeking > 0:
            ms = mode_seeking_term(G, fake, z, y, autocast_dtype, rng=rng)
            loss_g = loss_g + mode_seeking * ms
            metrics["mode_seeking"] = ms.detach()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
    opt_g.step()
    metrics["loss_g"] = loss_g.detach()
    return metrics


def mode_seeking_term(G: nn.Module, fake: Tensor, z: Tensor, y: Tensor,
                      autocast_dtype: torch.dtype | None = None, *,
                      rng: torch.Generator | None = None) -> Tensor:
    """MSGAN (Mao et al. 2019): 1 / (mean|G(z,y) - G(z',y)| / mean|z - z'| + eps).

    A second batch from fresh noise z' with the SAME labels y: a conditional G that maps every
    z of a class to one image (within-class mode collapse, which class coverage and FID on
    digits barely see) makes the ratio small and this term large. fake: (B, C, H, W) = G(z, y).
    """
    # z' from the caller's generator (the stream z came from), not the global RNG: the trainer
    # seeds both with the same epoch seed, and on CUDA nothing else draws from the global
    # stream, so randn_like gave z' == z and 0/0 = NaN at the first step (seen on an H100).
    gen_device = rng.device if rng is not None else z.device
    z2 = torch.randn(z.shape, generator=rng, device=gen_device).to(z.device)  # (B, latent_dim)
    with autocast(z.device, autocast_dtype):
        fake2 = G(z2, y)  # (B, C, H, W)
    dz = (z - z2).abs().mean().clamp_min(1e-8)
    ratio = (fake.float() - fake2.float()).abs().mean() / dz
    return 1.0 / (ratio + 1e-5)


def _floats(metrics: dict[str, Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def d_step(
    G: nn.Module, D: nn.Module, opt_d: torch.optim.Optimizer, real: Tensor, y: Tensor, z: Tensor,
    **kwargs: Any,
) -> dict[str, float]:
    """`d_update` with python-float metrics: loss_d, d_real, d_fake (and gp for wgan-gp)."""
    return _floats(d_update(G, D, opt_d, real, y, z, **kwargs))


def g_step(
    G: nn.Module, D: nn.Module, opt_g: torch.optim.Optimizer, z: Tensor, y: Tensor,
    **kwargs: Any,
) -> dict[str, float]:
    """`g_update` with python-float metrics: loss_g."""
    return _floats(g_update(G, D, opt_g, z, y, **kwargs))


# --------------------------------------------------------------------------- EMA of G


def make_ema(G: nn.Module) -> nn.Module:
    """A frozen copy of (unwrapped) G in eval mode, to be updated by `ema_update`."""
    return copy.deepcopy(unwrap(G)).eval().requires_grad_(False)


@torch.no_grad()
def ema_update(ema: nn.Module, G: nn.Module, decay: float, num_updates: int) -> None:
    """ema ← d·ema + (1-d)·G with d = min(decay, (1+n)/(10+n)); buffers (BN stats) copied.

    Hand-written rather than `torch.optim.swa_utils.AveragedModel`: that one has no warm-up
    (a short run would publish weights still close to the random init) and averages BN's
    running statistics instead of copying the live ones. Warm-up as in TensorFlow's
    `ExponentialMovingAverage(num_updates=...)`.
    """
    d = min(decay, (1.0 + num_updates) / (10.0 + num_updates))
    src = unwrap(G)
    ema_p = list(ema.parameters())
    src_p = [p.detach() for p in src.parameters()]
    torch._foreach_lerp_(ema_p, src_p, 1.0 - d)
    for b_ema, b in zip(ema.buffers(), src.buffers(), strict=True):
        b_ema.copy_(b)
