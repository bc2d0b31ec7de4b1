"""`TrainState`: everything a run needs to continue, and `make_state`, a fresh one.

What it is not: no loop (`gan.train.loop`), no serialisation (`gan.train.checkpoint` saves a
state and rebuilds one with `state_from_checkpoint`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from gan.core.config import ModelConfig, TrainConfig
from gan.nets.models import build
from gan.train.steps import make_ema, unwrap


@dataclass
class TrainState:
    """Everything needed to continue a run. G and D may be replaced by DDP wrappers after
    `make_state`; everything here reads through `gan.train.steps.unwrap`."""

    G: nn.Module
    D: nn.Module
    G_ema: nn.Module | None  # unwrapped, eval mode; None when train_cfg.ema_decay == 0
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    epoch: int = 0  # completed epochs; the next one run is epoch + 1
    step: int = 0  # D steps (batches) done
    ema_updates: int = 0
    history: list[dict[str, float]] = field(default_factory=list)  # one dict per epoch
    dataset_version: str = ""
    saturated_run: int = 0  # consecutive saturated-D steps so far (not checkpointed)

    @property
    def generator(self) -> nn.Module:
        """The generator to evaluate and publish: the EMA copy when enabled, else G."""
        return self.G_ema if self.G_ema is not None else unwrap(self.G)


def adam(module: nn.Module, *, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam over `module`'s parameters, fused (one kernel pass over all parameters) where
    PyTorch has the fused kernel for their device (CPU, CUDA), else the foreach default.

    Why: the optimiser step does not shrink with the batch, and every data-parallel rank runs
    it in full; measured on this 2-core machine for the seed MLP (2.9 M parameters), one
    thread: 9.4 ms per step foreach, 2.3 ms fused, about a third of a half-batch step."""
    params = list(module.parameters())
    fused = bool(params) and all(p.device.type in _FUSED_ADAM_DEVICES for p in params)
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=fused or None)


_FUSED_ADAM_DEVICES = frozenset({"cpu", "cuda"})


def make_state(model_cfg: ModelConfig, train_cfg: TrainConfig,
               device: torch.device | str = "cpu") -> TrainState:
    """Fresh G, D (built on CPU from train_cfg.seed, then moved), EMA copy and Adam optimisers."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_cfg.seed)
        G, D = build(model_cfg)
    G, D = G.to(device), D.to(device)
    return TrainState(
        G=G, D=D, G_ema=make_ema(G) if train_cfg.ema_decay > 0 else None,
        opt_g=adam(G, lr=train_cfg.lr_g, betas=train_cfg.betas_g),
        opt_d=adam(D, lr=train_cfg.lr_d, betas=train_cfg.betas_d),
        model_cfg=model_cfg, train_cfg=train_cfg,
    )
