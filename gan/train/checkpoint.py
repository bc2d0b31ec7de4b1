"""Self-describing training checkpoints, loaded weights-only.

What this module is: `save_checkpoint(state) -> bytes` stores the model config and train config
(plain dicts), the state dicts of G, D, G's EMA and both optimisers, epoch/step, the dataset
version and the per-epoch history — tensors and primitives only. `load_checkpoint` reads one
with `torch.load(weights_only=True)` and refuses anything else with a clear error;
`generator_from_checkpoint` / `discriminator_from_checkpoint` rebuild models from it alone.

What it is not: no storage (the caller puts the bytes where it wants), no pickling of arbitrary
objects, no training loop (`state_from_checkpoint` rebuilds a state to continue, with the
configured optimiser hyperparameters; `check_resumable` says which training settings a
continued run may change).
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gan.core.config import ModelConfig, TrainConfig
from gan.nets.models import build_discriminator, build_generator
from gan.train.state import TrainState, make_state
from gan.train.steps import unwrap

FORMAT = "gan-checkpoint/1"
REQUIRED = ("format", "model_config", "train_config", "generator", "discriminator", "epoch",
            "step")


# Training settings a stopped run may continue with changed: how long and on how much it
# trains, or how its workers read the data (in memory or streamed), never what it learns
# (loss, learning rates, betas, batch, seed, ...).
RESUMABLE_TRAIN_FIELDS = frozenset({"epochs", "time_limit_s", "num_workers", "cpus_per_worker",
                                    "max_failures", "checkpoint_every", "stream",
                                    "max_in_memory_mb"})


class CheckpointError(ValueError):
    """A checkpoint that is unreadable, not ours, or holds more than tensors and primitives."""


class ResumeRefused(ValueError):
    """Continuing a run with other training settings than it was started with."""


def resume_conflicts(saved: Mapping[str, Any], train_cfg: TrainConfig
                     ) -> dict[str, tuple[Any, Any]]:
    """{field: (saved value, requested value)} for each training setting that differs from the
    one a run was started with (`saved`: a TrainConfig dump), except RESUMABLE_TRAIN_FIELDS.
    Fields the saved settings lack (older checkpoints) are not compared."""
    now = train_cfg.model_dump(mode="json")
    return {k: (saved[k], v) for k, v in sorted(now.items())
            if k not in RESUMABLE_TRAIN_FIELDS and k in saved and saved[k] != v}


def check_resumable(saved: Mapping[str, Any], train_cfg: TrainConfig, *, run_id: str) -> None:
    """Raise ResumeRefused naming every changed training setting (`resume_conflicts`)."""
    diff = resume_conflicts(saved, train_cfg)
    if diff:
        changes = ", ".join(f"{k} {old!r} → {new!r}" for k, (old, new) in diff.items())
        raise ResumeRefused(
            f"run id {run_id} was started with other training settings ({changes}); a run "
            f"continues only with changed {', '.join(sorted(RESUMABLE_TRAIN_FIELDS))}: use "
            "the original values, or a new run id to train with these")


def save_checkpoint(state: TrainState, *, dataset_version: str | None = None) -> bytes:
    """Serialise a TrainState (G/D may be DDP-wrapped: the inner modules are saved)."""
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        # mode="json": tuples become lists, so only primitives reach the pickle stream.
        "model_config": state.model_cfg.model_dump(mode="json"),
        "train_config": state.train_cfg.model_dump(mode="json"),
        "generator": unwrap(state.G).state_dict(),
        "discriminator": unwrap(state.D).state_dict(),
        "generator_ema": state.G_ema.state_dict() if state.G_ema is not None else None,
        "opt_g": state.opt_g.state_dict(),
        "opt_d": state.opt_d.state_dict(),
        "epoch": int(state.epoch),
        "step": int(state.step),
        "ema_updates": int(state.ema_updates),
        "dataset_version": state.dataset_version if dataset_version is None else dataset_version,
        "history": [dict(h) for h in state.history],
    }
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return buf.getvalue()


def load_checkpoint(data: bytes | str | Path) -> dict[str, Any]:
    """Bytes or a file path → the checkpoint dict (tensors on CPU). Raises CheckpointError."""
    origin = "checkpoint bytes" if isinstance(data, bytes) else str(data)
    if not isinstance(data, bytes):
        try:
            data = Path(data).read_bytes()
        except OSError as e:
            raise CheckpointError(f"{origin}: cannot read: {e.strerror or e}") from e
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = _unpickling_detail(e)
        if "GLOBAL" not in detail:
            raise CheckpointError(f"{origin}: not a readable torch checkpoint: {detail}") from e
        raise CheckpointError(
            f"{origin}: refused: it holds objects other than tensors and primitives "
            f"(weights-only loading; nothing was executed): {detail}"
        ) from e
    except (RuntimeError, EOFError, ValueError) as e:
        raise CheckpointError(f"{origin}: not a readable torch checkpoint: {e}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{origin}: not a {FORMAT} checkpoint (format: {found!r})")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{origin}: checkpoint lacks {missing}")
    return ckpt


def _unpickling_detail(e: Exception) -> str:
    """The informative lines of torch's weights-only error, without its generic advice."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    keep = [ln for ln in lines[1:]
            if not ln.startswith(("Check the documentation", "Please file an issue"))]
    return "; ".join(keep) or (lines[0] if lines else type(e).__name__)


def _as_dict(ckpt: dict[str, Any] | bytes | str | Path) -> dict[str, Any]:
    return ckpt if isinstance(ckpt, dict) else load_checkpoint(ckpt)


def model_config(ckpt: dict[str, Any] | bytes | str | Path) -> ModelConfig:
    """The ModelConfig a checkpoint was trained with."""
    return ModelConfig(**_as_dict(ckpt)["model_config"])


def generator_from_checkpoint(
    ckpt: dict[str, Any] | bytes | str | Path, use_ema: bool = True
) -> nn.Module:
    """G rebuilt from the checkpoint alone, in eval mode on CPU; the EMA weights when present
    and `use_ema` (that is the copy evaluated and published), else the raw G weights."""
    c = _as_dict(ckpt)
    G = build_generator(ModelConfig(**c["model_config"]))
    weights = c.get("generator_ema") if use_ema and c.get("generator_ema") else c["generator"]
    G.load_state_dict(weights)
    return G.eval()


def discriminator_from_checkpoint(ckpt: dict[str, Any] | bytes | str | Path) -> nn.Module:
    """D rebuilt from the checkpoint alone, in eval mode on CPU."""
    c = _as_dict(ckpt)
    D = build_discriminator(ModelConfig(**c["model_config"]))
    D.load_state_dict(c["discriminator"])
    return D.eval()


def state_from_checkpoint(ckpt: dict[str, Any] | bytes, device: torch.device | str = "cpu",
                          train_cfg: TrainConfig | None = None) -> TrainState:
    """Rebuild a TrainState from a checkpoint; `train_cfg` may extend it (e.g. more epochs)."""
    c = ckpt if isinstance(ckpt, dict) else load_checkpoint(ckpt)
    state = make_state(ModelConfig(**c["model_config"]),
                       train_cfg or TrainConfig(**c["train_config"]), device)
    state.G.load_state_dict(c["generator"])
    state.D.load_state_dict(c["discriminator"])
    if state.G_ema is not None:
        state.G_ema.load_state_dict(c.get("generator_ema") or c["generator"])
    tc = state.train_cfg
    _load_optimizer(state.opt_g, c["opt_g"], lr=tc.lr_g, betas=tc.betas_g)
    _load_optimizer(state.opt_d, c["opt_d"], lr=tc.lr_d, betas=tc.betas_d)
    state.epoch, state.step = int(c["epoch"]), int(c["step"])
    state.ema_updates = int(c.get("ema_updates", 0))
    state.history = [dict(h) for h in c.get("history", [])]
    state.dataset_version = str(c.get("dataset_version", ""))
    return state


def _load_optimizer(opt: torch.optim.Optimizer, saved: dict[str, Any], *, lr: float,
                    betas: tuple[float, float]) -> None:
    """`opt.load_state_dict(saved)` (Adam's moments and step counts) with the saved param
    groups' settings overridden where this run decides them:
      * `lr`, `betas`: the configured ones, so a resumed run optimises with what its config
        (and MLflow params) say;
      * the kernel (fused / foreach, see `gan.train.state.adam`) `opt` was built with, so a
        checkpoint written by an older version (foreach) or on another device resumes with
        the kernel this device has. Set before loading, so the loader places Adam's step
        counters where that kernel wants them (on the parameters' device if fused)."""
    ours = {"lr": lr, "betas": betas} | {k: opt.defaults.get(k) for k in ("fused", "foreach")}
    opt.load_state_dict({**saved, "param_groups": [g | ours for g in saved["param_groups"]]})
