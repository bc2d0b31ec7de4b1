"""The stacked-digits mode-coverage benchmark: modes covered of 1,000 and KL(generated ‖ uniform).

What this module is: the measurement of Stacked MNIST (Metz et al. 2017; VEEGAN, Srivastava
et al. 2017; PacGAN, Lin et al. 2018; R3GAN, Huang et al. 2024) on the stacked digits of
`gan.data.stacked`:
  - `mode_stats(digits)`: per-channel digit predictions (N, 3) → each image's mode
    (100·r + 10·g + b), the modes covered (a mode counts when at least one sample falls in it,
    PacGAN's convention) and KL(p_gen ‖ uniform) = Σ_m p_m log(p_m · 1000) over the empirical
    mode distribution (natural log; empty modes add 0). Pure numpy.
  - the reference classifier that reads each channel (`train_digit_classifier`): the
    classifier judge's small CNN (`gan.eval.judge.train_judge`, seeded, deterministic on CPU)
    trained on the `reference` half of the bundled glyphs at 28 px, exactly as preparation
    makes the grey digits, its accuracy measured on the `run` half (glyphs it never saw);
    cached in a folder (`cached_digit_classifier`), keyed by its settings;
  - `channel_digits(classifier, images)`: (N, 3, H, W) in [-1, 1] → (N, 3) digits; an image
    that is not 3-channel, square and at least MIN_SIZE px is refused naming its shape; another
    size than 28 is resized to 28 (bilinear, antialiased when shrinking).

What it is not: no generator loading or sampling (`gan.tools.modes`), no data rendering
(`gan.data.stacked`), no gate rule: the figures are reported beside the real data's own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gan.core.images import from_uint8
from gan.data.prepare import PreparedData
from gan.data.stacked import MODES, SIZE, digit_glyphs
from gan.eval.judge import FolderFiles, Judge, judge_from_bytes, judge_to_bytes, train_judge

CLASSIFIER_EPOCHS = 30  # measured: 23 s on 2 shared cores, held-out accuracy 0.989 (10: 0.980)
CLASSIFIER_SEED = 0
MIN_SIZE = 16  # smaller images cannot be resized to 28 px and still read as digits
MIN_CLASSIFIER_ACCURACY = 0.9  # below this the channels' digits (and the modes) mean little
CACHE_FORMAT = 1  # bump when the classifier's training changes: old caches are then retrained


class ModesError(ValueError):
    """Input the benchmark cannot measure (wrong image shape, too few samples)."""


@dataclass(frozen=True)
class ModeStats:
    """The mode figures of N images."""

    n: int
    covered: int  # modes with at least one sample, of MODES
    kl: float  # KL(p ‖ uniform over MODES), natural log
    counts: np.ndarray  # (MODES,) int64 samples per mode

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "modes_covered": self.covered, "modes_kl": round(self.kl, 4)}


def mode_index(digits: np.ndarray) -> np.ndarray:
    """(N, 3) digits (R, G, B) → (N,) modes 100·r + 10·g + b."""
    d = np.asarray(digits)
    if d.ndim != 2 or d.shape[1] != 3:
        raise ModesError(f"per-channel digits must be (N, 3), got {d.shape}")
    if d.size and (d.min() < 0 or d.max() > 9):
        raise ModesError(f"digits must lie in 0..9, got {d.min()}..{d.max()}")
    return (d.astype(np.int64) @ np.array([100, 10, 1])).astype(np.int64)


def mode_stats(digits: np.ndarray) -> ModeStats:
    """Modes covered and KL(p_gen ‖ uniform) of the per-channel digits (N, 3)."""
    modes = mode_index(digits)
    if len(modes) == 0:
        raise ModesError("no samples: the mode figures need at least one image")
    counts = np.bincount(modes, minlength=MODES)  # (MODES,)
    p = counts / counts.sum()
    nz = p > 0
    kl = float(np.sum(p[nz] * np.log(p[nz] * MODES)))  # Σ p log(p / (1/MODES))
    return ModeStats(n=len(modes), covered=int(nz.sum()), kl=max(kl, 0.0), counts=counts)


# --------------------------------------------------------------------------- the classifier


def glyph_data() -> PreparedData:
    """The grey glyphs at 28 px as a labelled dataset: train = the `reference` half,
    holdout = the `run` half (disjoint; `gan.data.painted.glyph_split`)."""
    x_tr, y_tr = digit_glyphs("reference")  # (G, 28, 28) uint8, (G,)
    x_ho, y_ho = digit_glyphs("run")
    h = hashlib.sha256()
    for a in (x_tr, y_tr, x_ho, y_ho):
        h.update(np.ascontiguousarray(a).tobytes())
    return PreparedData(
        x_train=from_uint8(torch.from_numpy(x_tr[:, None].copy())),  # (G, 1, 28, 28)
        y_train=torch.from_numpy(y_tr),
        x_holdout=from_uint8(torch.from_numpy(x_ho[:, None].copy())),
        y_holdout=torch.from_numpy(y_ho), num_classes=10, name="digit-glyphs",
        version=h.hexdigest()[:16], source="digits (scikit-learn), reference/run halves")


def train_digit_classifier(epochs: int = CLASSIFIER_EPOCHS, seed: int = CLASSIFIER_SEED) -> Judge:
    """The per-channel classifier: trained on the reference glyphs, `accuracy` on the run
    glyphs (held out); deterministic for a seed on CPU."""
    return train_judge(glyph_data(), epochs, seed)


def cached_digit_classifier(folder: str | Path | None, *, epochs: int = CLASSIFIER_EPOCHS,
                            seed: int = CLASSIFIER_SEED) -> Judge:
    """The classifier cached in `folder` when its settings match (format, glyphs, epochs,
    seed), else a new one trained and written there; `folder` None: trained, not cached.
    ModesError when its held-out accuracy is under MIN_CLASSIFIER_ACCURACY."""
    data = glyph_data()
    key = {"format": CACHE_FORMAT, "glyphs": data.version, "epochs": epochs, "seed": seed}
    files = FolderFiles(Path(folder)) if folder is not None else None
    clf = _read_cached(files, key) if files is not None else None
    if clf is None:
        clf = train_judge(data, epochs, seed)
        if files is not None:
            weights, meta = judge_to_bytes(clf)
            files.write("classifier.safetensors", weights)  # weights first, JSON last
            files.write("classifier.json", json.dumps({**meta, "key": key}, indent=1).encode())
    if clf.accuracy < MIN_CLASSIFIER_ACCURACY:
        raise ModesError(f"the digit classifier reads held-out glyphs at {clf.accuracy:.3f}, "
                         f"under {MIN_CLASSIFIER_ACCURACY}: its modes would mean little "
                         f"(raise epochs, now {epochs})")
    return clf


def _read_cached(files: FolderFiles, key: dict[str, Any]) -> Judge | None:
    raw, weights = files.read("classifier.json"), files.read("classifier.safetensors")
    if raw is None or weights is None:
        return None
    meta = json.loads(raw)
    if meta.get("key") != key:
        return None
    try:
        return judge_from_bytes(weights, meta, files.where)
    except (ValueError, RuntimeError):  # JudgeError, a torn file: the caller retrains
        return None


@torch.no_grad()
def channel_digits(classifier: Judge, images: Tensor, batch_size: int = 1024) -> np.ndarray:
    """(N, 3, H, W) float in [-1, 1] → (N, 3) int64 digits, each channel read alone."""
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ModesError(f"the mode benchmark reads stacked digits: images (N, 3, S, S), got "
                         f"{tuple(images.shape)}; give a generator trained on --source "
                         "stacked-digits (3 channels)")
    n, _, s, _ = images.shape
    if s < MIN_SIZE:
        raise ModesError(f"images of {s}×{s} px are too small to read digits in (at least "
                         f"{MIN_SIZE}; the stacked digits are {SIZE})")
    out = []
    for b in images.split(batch_size):
        x = b.float().reshape(-1, 1, s, s)  # (3B, 1, S, S): every channel a grey digit
        if s != SIZE:
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False,
                              antialias=s > SIZE)
        out.append(classifier.predict(x).reshape(-1, 3))  # (B, 3)
    return torch.cat(out).numpy().astype(np.int64)
