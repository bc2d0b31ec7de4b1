"""The optional standard FID: Inception-v3 pool3 features from a weight file the user supplies.

What this module is:
  * `load_inception(uri, storage)`: the FID Inception-v3 (`gan.nets.inception`) with the
    user's weights, read from a local path or an `s3://` URI through the project's storage —
    never downloaded. A missing, unreadable or wrong-architecture file raises `InceptionError`
    naming the file and the knob (`eval.inception_weights`, `gan retrain
    --inception-weights`). It reads and checks the whole file, so a run can call it when it
    starts, before any training;
  * `InceptionFID`: the FID of image sets against one reference set (the holdout), in
    Inception space, with torchmetrics' `FrechetInceptionDistance`; the reference features
    are computed once and kept across calls;
  * `STANDARD_SHA256`: the published weight file's digest, so a report can say whether its
    numbers are comparable with published ones.

What it is not: not a judge and not a gate rule. `fid_inception` is reported for comparison
with published numbers; promotion is decided in the judge's feature space (`gan.eval.gate`
never reads it). No sampling, no report writing (`gan.eval.evaluate`, `gan.eval.report`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torchmetrics.image.fid import FrechetInceptionDistance

from gan.io.uri import HTTP, UriError, read_bytes
from gan.nets.inception import FIDInceptionV3

if TYPE_CHECKING:
    from gan.io.storage import Storage

# sha256 of the TF FID Inception weights as ported by pytorch-fid
# (`pt_inception-2015-12-05-6726825d.pth`) and torch-fidelity
# (`weights-inception-2015-12-05-6726825d.pth`): the same 95,628,359 bytes; torch.hub's file
# name carries the first 8 hex digits.
STANDARD_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
KNOB = "eval.inception_weights (gan retrain --inception-weights)"
BATCH = 32  # images per forward at 299×299: ~1 GB of activations on CPU


class InceptionError(ValueError):
    """The Inception weight file cannot be used; the message names the file and the knob."""


@dataclass(frozen=True)
class Inception:
    """The loaded network and where its weights came from."""

    net: FIDInceptionV3
    uri: str
    sha256: str

    @property
    def standard(self) -> bool:
        """True for the published file: only then compare with published FIDs."""
        return self.sha256 == STANDARD_SHA256

    def describe(self) -> dict[str, Any]:
        return {"uri": self.uri, "sha256": self.sha256, "standard": self.standard}


def _fail(uri: str, problem: str) -> InceptionError:
    return InceptionError(f"Inception weight file {uri}: {problem}; set {KNOB} to the FID "
                          f"Inception-v3 state dict (pt_inception-2015-12-05-6726825d.pth), "
                          "or leave it empty to skip the standard FID")


def _state_dict(uri: str, blob: bytes) -> dict[str, Tensor]:
    try:  # weights_only: a weight file may hold tensors, never code to run
        obj = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (pickle, zip and torch errors alike: not a weight file)
        raise _fail(uri, f"not a PyTorch weight file ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(obj, Mapping) or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        raise _fail(uri, f"holds a {type(obj).__name__}, not a state dict of named tensors")
    return dict(obj)


def _check_names(uri: str, got: dict[str, Tensor], want: dict[str, Tensor]) -> None:
    """Same tensor names and shapes as FIDInceptionV3, else a message with examples."""
    missing = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    shapes = [f"{k} {tuple(got[k].shape)} (want {tuple(want[k].shape)})"
              for k in want if k in got and got[k].shape != want[k].shape]
    problems = [f"{len(v)} {what} (e.g. {', '.join(v[:3])})" for what, v in (
        ("missing tensors", missing), ("unexpected tensors", unexpected),
        ("wrong shapes", shapes)) if v]
    if problems:
        raise _fail(uri, "not the FID Inception-v3 architecture: " + "; ".join(problems))


def load_inception(uri: str, storage: Storage | None = None) -> Inception:
    """The FID Inception-v3 with the weights at `uri` (local path, `file://` or `s3://`; an
    s3:// URI needs `storage`), in eval mode; `InceptionError` naming the file and the knob
    when it cannot be read or is not that network's state dict."""
    if uri.startswith(HTTP):
        raise _fail(uri, "is a URL, and nothing is downloaded at run time: download the file "
                         "once, then give its local path or an s3:// URI")
    try:
        blob = read_bytes(uri, storage, what="Inception weight file", http=False)
    except UriError as e:
        raise _fail(uri, f"cannot be read ({e})") from None
    got = _state_dict(uri, blob)
    net = FIDInceptionV3()
    want = net.state_dict()
    for k, v in want.items():  # BatchNorm's step counter is not a weight: older files lack it
        if k.endswith("num_batches_tracked"):
            got.setdefault(k, v)
    _check_names(uri, got, want)
    bad = [k for k, v in got.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise _fail(uri, f"{len(bad)} tensors have non-finite values (e.g. {bad[0]})")
    net.load_state_dict(got, strict=True)
    net.requires_grad_(False).fuse_()  # eval mode, BatchNorm folded: 1.1–1.7× faster on CPU
    return Inception(net, uri, hashlib.sha256(blob).hexdigest())


class InceptionFID:
    """FID in Inception space of image sets against one reference set.

    `reference` (N, C, H, W) in [-1, 1] is fed once; each call feeds one set as the generated
    side, computes, and resets that side only (torchmetrics' `reset_real_features=False`).
    The network runs on `device` (default: a CUDA GPU when this process has one, else the
    CPU; the net is moved there), with TF32 off so GPU features stay float32-exact.
    """

    def __init__(self, inception: Inception, reference: Tensor, *, batch_size: int = BATCH,
                 device: str | None = None) -> None:
        self.batch_size = batch_size
        self.images, self.net_s, self.fid_s = 0, 0.0, 0.0  # images seen; network, FID time
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.metric = FrechetInceptionDistance(feature=inception.net, normalize=False,
                                               reset_real_features=False).to(self.device)
        self._feed(reference, real=True)

    def _feed(self, images: Tensor, *, real: bool) -> None:
        no_tf32 = (torch.backends.cudnn.flags(enabled=True, allow_tf32=False)
                   if self.device.type == "cuda" else contextlib.nullcontext())
        t0 = time.perf_counter()
        with no_tf32:  # torchmetrics runs update without autograd
            for batch in images.split(self.batch_size):  # (≤B, C, H, W)
                self.metric.update(batch.float().to(self.device), real=real)
        self.images += len(images)
        self.net_s += time.perf_counter() - t0

    def cost(self) -> dict[str, Any]:
        """Images through the network so far, seconds in all (network and the Fréchet
        distances, each a 2048 × 2048 eigenvalue problem), the network's images/s, device."""
        rate = self.images / self.net_s if self.net_s > 0 else 0.0
        return {"images": self.images, "seconds": round(self.net_s + self.fid_s, 2),
                "images_per_s": round(rate, 2), "device": self.device.type}

    def __call__(self, images: Tensor) -> float:
        """FID of `images` (M ≥ 2, C, H, W) in [-1, 1] against the reference."""
        self._feed(images, real=False)
        t0 = time.perf_counter()
        try:
            return float(self.metric.compute())
        finally:
            self.metric.reset()
            self.fid_s += time.perf_counter() - t0
