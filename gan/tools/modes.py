"""`gan modes`: the stacked-digits mode-coverage benchmark of one generator, beside the real data's.

What this module is: `load_any_generator(model)` (a registered model — `models:/NAME@ALIAS`,
`models:/NAME/VERSION`, `runs:/...`, a local MLflow model folder — or a training checkpoint:
`checkpoint.pt` as `gan.tools.recipes` and `gan.train.checkpoint` write it, or the folder holding
one), `generated_modes(generator, classifier, n, seed)` (n seeded samples, drawn and read in
chunks so memory stays bounded) and `modes_report(...)`: the generator's modes covered and
KL(generated ‖ uniform) (`gan.eval.modes`) beside the same figures of n real stacked images
made from the glyphs the classifier never saw, and the classifier's held-out accuracy.
Docs: docs/modes.md.

What it is not: no metric math or classifier training (`gan.eval.modes`), no training.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gan.core.images import from_uint8
from gan.data.stacked import MODES, render_stacked
from gan.eval.judge import Judge
from gan.eval.modes import (
    ModesError,
    ModeStats,
    cached_digit_classifier,
    channel_digits,
    mode_stats,
)
from gan.nets.models import sample_images
from gan.train.checkpoint import CheckpointError, generator_from_checkpoint

STANDARD_N = 26_000  # samples per figure in VEEGAN / PacGAN's Stacked MNIST tables
MIN_N = MODES  # fewer samples than modes cannot cover them all
MAX_N = 1_000_000
CHUNK = 2048  # images drawn and read at a time: (2048, 3, 28, 28) float32 ≈ 19 MB
REAL_SEED = 1  # the real images' stream (the source's own images use seed 0)
REGISTRY_PREFIXES = ("models:/", "runs:/")
CHECKPOINT_FILE = "checkpoint.pt"  # the name `gan.tools.recipes` gives its checkpoints


def check_n(n: int, option: str = "--n") -> None:
    """ModesError naming `option` unless MIN_N ≤ n ≤ MAX_N."""
    if not MIN_N <= n <= MAX_N:
        raise ModesError(f"{option} {n}: give {MIN_N} to {MAX_N} samples (at least one per "
                         f"mode; the papers' figure uses {STANDARD_N})")


def load_any_generator(model: str) -> nn.Module:
    """G in eval mode on CPU from a registry URI, a local MLflow model folder, a checkpoint file
    or a folder holding `checkpoint.pt`; ModesError naming `--model` when it is none of them."""
    if model.startswith(REGISTRY_PREFIXES) or (Path(model) / "MLmodel").is_file():
        # lazy: MLflow (≈2 s) loads only for a registered model
        from gan.registry.load import load_generator

        return load_generator(model)
    path = Path(model)
    if path.is_dir() and (path / CHECKPOINT_FILE).is_file():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise ModesError(f"--model {model}: not a models:/ or runs:/ URI, an MLflow model "
                         f"folder, a checkpoint file or a folder holding {CHECKPOINT_FILE}")
    try:
        return generator_from_checkpoint(path)
    except CheckpointError as e:
        raise ModesError(f"--model {model}: {e}") from e


def _check_generator(generator: nn.Module) -> None:
    shape = tuple(getattr(generator, "image_shape", ()))
    if len(shape) != 3 or shape[0] != 3:
        raise ModesError(f"the generator makes images of shape {shape or 'unknown'}, not "
                         "(3, S, S): the mode benchmark reads stacked digits; give a model "
                         "trained on --source stacked-digits")


def generated_modes(generator: nn.Module, classifier: Judge, n: int, seed: int = 0) -> ModeStats:
    """The mode figures of n samples of `generator` (chunk i seeded by (seed, i); a conditional
    G gets every class equally often)."""
    check_n(n)
    _check_generator(generator)
    k = int(getattr(generator, "num_classes", 1))
    conditional = bool(getattr(generator, "conditional", False))
    digits = []
    for i, start in enumerate(range(0, n, CHUNK)):
        b = min(CHUNK, n - start)
        labels = torch.arange(start, start + b) % k if conditional else None
        chunk_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        x = sample_images(generator, b, chunk_seed, labels)  # (b, 3, S, S) in [-1, 1]
        digits.append(channel_digits(classifier, x))
    return mode_stats(np.concatenate(digits))


def real_modes(classifier: Judge, n: int, seed: int = REAL_SEED) -> ModeStats:
    """The mode figures of n real stacked images made from the `run` glyphs (held out from
    the classifier), read the same way as a generator's."""
    check_n(n, "--real-n")
    digits = []
    for start in range(0, n, CHUNK * 4):
        x, _ = render_stacked(min(CHUNK * 4, n - start), seed + start, part="run")
        digits.append(channel_digits(classifier, from_uint8(torch.from_numpy(x))))
    return mode_stats(np.concatenate(digits))


def modes_report(model: str | nn.Module, *, n: int = STANDARD_N, seed: int = 0,
                 real_n: int | None = None, cache_dir: str | Path | None = None
                 ) -> dict[str, Any]:
    """{"generated": {...}, "real": {...}, "classifier": {...}, "seconds": ...}: the benchmark
    of `model` (a generator or what `load_any_generator` reads) with n samples, and of
    `real_n` (default n) real images."""
    check_n(n)
    check_n(real_n or n, "--real-n")
    t0 = time.perf_counter()
    generator = load_any_generator(model) if isinstance(model, str) else model
    _check_generator(generator)  # before the classifier is trained: fail in no time
    clf = cached_digit_classifier(cache_dir)
    gen = generated_modes(generator, clf, n, seed)
    real = real_modes(clf, real_n or n)
    return {"generated": gen.as_dict(), "real": real.as_dict(),
            "classifier": {"heldout_accuracy": round(clf.accuracy, 4), "epochs": clf.epochs,
                           "seed": clf.seed},
            "seconds": round(time.perf_counter() - t0, 1)}
