"""Sampling a published generator: images for people (a PNG grid) and for data (an .npz).

What this module is: the library side of `gan sample`. `check_request` validates the request
before any model is fetched; `generate` draws seeded samples in batches (balanced class labels
for conditional models, or one class), at most 1 GiB of float32 images per request, the bound
the published model itself applies (`check_bytes`); `write_grid` / `write_npz` save them;
`sample_to_files` does all of it for a model URI.

    .npz  x: float32 (N, C, H, W) in [-1, 1]   y: int64 (N,) (conditional models only)

What it is not: no MLflow calls of its own (`gan.registry.load.load_generator` fetches the
model), no drawing code (`gan.eval.pictures` tiles the grid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gan.core.settings import Settings
from gan.eval import pictures
from gan.nets.models import Generator, sample_images

MAX_SAMPLES = 100_000  # (100000, 1, 28, 28) float32 is 314 MB: beyond this, ask for batches
BATCH = 1024


class SamplingError(ValueError):
    """A request that cannot be served (bad --n, --label for this model, unwritable path)."""


@dataclass(frozen=True)
class Samples:
    x: Tensor  # (N, C, H, W) float32 in [-1, 1], CPU
    y: Tensor | None  # (N,) int64 labels, conditional models only


def check_request(n: int, *, out: str | Path | None = None, npz: str | Path | None = None,
                  label: int | None = None) -> None:
    """Everything checkable before fetching the model; SamplingError names the option."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_SAMPLES:
        raise SamplingError(f"--n must be an integer in [1, {MAX_SAMPLES}], got {n!r}")
    if out is None and npz is None:
        raise SamplingError("nothing to write: give --out (PNG grid) and/or --npz (raw samples)")
    if label is not None and label < 0:
        raise SamplingError(f"--label must be >= 0, got {label}")
    for opt, path in (("--out", out), ("--npz", npz)):
        if path is not None and not Path(path).parent.resolve().is_dir():
            raise SamplingError(f"{opt} {path}: folder {Path(path).parent} does not exist")
    if out is not None and Path(out).suffix.lower() != ".png":
        raise SamplingError(f"--out {out}: the grid is written as PNG; use a .png name")


def labels_for(generator: Generator, n: int, label: int | None) -> Tensor | None:
    """(n,) int64: one class, or every class equally often (counts differ by at most one;
    in order 0,1,…,K-1,0,1,… so a K-column grid shows one class per column). None when the
    model is unconditional."""
    if not generator.conditional:
        if label is not None:
            raise SamplingError(f"--label {label}: this generator is unconditional")
        return None
    k = generator.num_classes
    if label is not None:
        if not 0 <= label < k:
            raise SamplingError(f"--label must lie in [0, {k}) for this model, got {label}")
        return torch.full((n,), label, dtype=torch.int64)
    return torch.arange(n, dtype=torch.int64) % k


def check_bytes(generator: Generator, n: int, max_bytes: int | None = None) -> None:
    """SamplingError unless n float32 images of this G fit in `max_bytes` (None: the published
    model's own default bound per request, 1 GiB)."""
    # lazy: gan.registry's package imports MLflow (≈2 s); `gan sample` checks its request
    # before that, and calls this after loading the model (MLflow imported by then)
    from gan.registry.portable.gan_generator_model import MAX_OUTPUT_BYTES, format_bytes

    max_bytes = MAX_OUTPUT_BYTES if max_bytes is None else max_bytes
    c, h, w = generator.image_shape
    per_image = c * h * w * 4
    if n * per_image > max_bytes:
        raise SamplingError(
            f"{n} images of {c}×{h}×{w} float32 are {format_bytes(n * per_image)}, above the "
            f"limit of {format_bytes(max_bytes)} per request: ask for at most "
            f"{max_bytes // per_image} (--n), and draw more in further calls with other --seed")


def generate(generator: Generator, n: int, *, seed: int = 0, label: int | None = None,
             batch: int = BATCH, max_bytes: int | None = None) -> Samples:
    """n seeded samples (`gan.nets.models.sample_images`), on CPU as float32; refused before
    drawing when they would exceed `max_bytes`."""
    if not 1 <= n <= MAX_SAMPLES:
        raise SamplingError(f"n must lie in [1, {MAX_SAMPLES}], got {n}")
    check_bytes(generator, n, max_bytes)
    y = labels_for(generator, n, label)
    return Samples(x=sample_images(generator, n, seed, y, batch_size=batch), y=y)


def grid_columns(generator: Generator, n: int) -> int:
    """One class per column for conditional models, else a near-square grid."""
    if generator.conditional and n >= generator.num_classes:
        return generator.num_classes
    return max(1, math.ceil(math.sqrt(n)))


def write_grid(samples: Samples, path: str | Path, ncol: int, scale: int = 2) -> Path:
    p = Path(path)
    p.write_bytes(pictures.sample_grid_png(samples.x, ncol=ncol, scale=scale))
    return p


def write_npz(samples: Samples, path: str | Path) -> Path:
    """x float32 (N, C, H, W) in [-1, 1], and y int64 (N,) when the model is conditional."""
    p = Path(path)
    arrays = {"x": samples.x.numpy().astype(np.float32, copy=False)}
    if samples.y is not None:
        arrays["y"] = samples.y.numpy().astype(np.int64, copy=False)
    with p.open("wb") as f:  # a file object: savez would append ".npz" to a bare name
        np.savez_compressed(f, **arrays)
    return p


def sample_to_files(model_uri: str, n: int, *, out: str | Path | None = None,
                    npz: str | Path | None = None, seed: int = 0, label: int | None = None,
                    settings: Settings | None = None,
                    device: torch.device | str = "cpu") -> dict[str, object]:
    """`gan sample`: check, load `model_uri`, draw, write; returns a summary for printing."""
    # lazy: gan.registry loads MLflow (≈2 s); `gan sample` checks the request before that
    from gan.registry.load import load_generator

    check_request(n, out=out, npz=npz, label=label)
    G = load_generator(model_uri, settings=settings, device=device)
    samples = generate(G, n, seed=seed, label=label)
    written = []
    if out is not None:
        written.append(str(write_grid(samples, out, grid_columns(G, n))))
    if npz is not None:
        written.append(str(write_npz(samples, npz)))
    return {"model": model_uri, "n": n, "seed": seed, "conditional": G.conditional,
            "shape": list(samples.x.shape), "written": written}
