"""The FID Inception-v3 network (Heusel et al. 2017 / TF FID reference), pool3 → 2048 features.

What this module is: `FIDInceptionV3`, the Inception-v3 variant of TensorFlow's
`inception-2015-12-05` graph that the reference FID code (TTUR) uses, with the same layer
names as the two PyTorch ports of it, so their published weight files load by name:
  * pytorch-fid (mseitzer/pytorch-fid, `src/pytorch_fid/inception.py`, `fid_inception_v3`):
    `pt_inception-2015-12-05-6726825d.pth`;
  * torch-fidelity (toshas/torch-fidelity, `torch_fidelity/feature_extractor_inceptionv3.py`,
    `FeatureExtractorInceptionV3`): `weights-inception-2015-12-05-6726825d.pth`.
Both are Apache License 2.0; the blocks below follow torch-fidelity's (themselves adapted
from pytorch-fid and torchvision), and `tf1_resize_bilinear` ports its
`interpolate_bilinear_2d_like_tensorflow1x` ("slow", bit-exact on CPU). The original weights
are Google's TensorFlow weights (Apache License 2.0).

Written here by hand, not imported: torch-fidelity (and torchmetrics' default Inception,
which is torch-fidelity's) requires and imports torchvision at import time, and torchvision
cannot be installed beside this project's torch (see README, "Standard FID").

Input convention of `forward`: our images (B, C, H, W) float in [-1, 1], C = 1 or 3, any H, W.
They are quantised to uint8 as a saved PNG would be (published FIDs are computed on image
files), grey repeated to 3 channels, resized to 299×299 with TF1's bilinear resize, then
scaled (x − 128) / 128 as the TF graph does, which is what the reference implementations feed
the network.

What it is not: no weight loading from files or URIs, no FID math (`gan.eval.inception`);
the logits layer `fc` exists only so the published files load strictly by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from gan.core.images import to_uint8

INPUT_SIZE = 299
NUM_FEATURES = 2048  # pool3
NUM_LOGITS = 1008  # the 2015 graph's classes (1000 + 8 unused)


def tf1_resize_bilinear(x: Tensor, size: int) -> Tensor:
    """(B, C, H, W) float → (B, C, size, size): TensorFlow 1.x `resize_bilinear`
    (align_corners=False, no half-pixel centres: source = destination · in/out), which differs
    from torch's bilinear; port of torch-fidelity's "slow" method."""
    h, w = x.shape[-2:]

    def axis(n_in: int) -> tuple[Tensor, Tensor, Tensor]:
        pos = torch.arange(size, dtype=x.dtype, device=x.device) * torch.tensor(
            n_in / size, dtype=torch.float32)  # (size,) source coordinate of each output pixel
        lo = pos.long()
        return lo, (lo + 1).clamp_max(n_in - 1), pos - lo.to(x.dtype)

    y_lo, y_hi, dy = axis(h)
    x_lo, x_hi, dx = axis(w)
    top, bottom = x[:, :, y_lo, :], x[:, :, y_hi, :]  # (B, C, size, W)
    dx = dx.view(1, 1, 1, size)
    top = top[..., x_lo] + (top[..., x_hi] - top[..., x_lo]) * dx  # (B, C, size, size)
    bottom = bottom[..., x_lo] + (bottom[..., x_hi] - bottom[..., x_lo]) * dx
    return top + (bottom - top) * dy.view(1, 1, size, 1)


class BasicConv2d(nn.Module):
    """conv (no bias) → BatchNorm (eps 1e-3, as TF) → ReLU."""

    def __init__(self, c_in: int, c_out: int, **conv: object) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, bias=False, **conv)  # type: ignore[arg-type]
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)

    def fuse_(self) -> None:
        """Fold the (eval-mode) BatchNorm into the conv (see `FIDInceptionV3.fuse_`)."""
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv, self.bn = fuse_conv_bn_eval(self.conv, self.bn), nn.Identity()


def _avg3(x: Tensor) -> Tensor:
    # TF's average pool does not count the zero padding (count_include_pad=False).
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35×35 block: 1×1, 5×5, double 3×3 and pooled branches."""

    def __init__(self, c_in: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg3(x))], 1)


class InceptionB(nn.Module):
    """35×35 → 17×17 reduction."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):
    """17×17 block with factorised 7×7 convolutions."""

    def __init__(self, c_in: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c_in, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for i in range(1, 6):
            d = getattr(self, f"branch7x7dbl_{i}")(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class InceptionD(nn.Module):
    """17×17 → 8×8 reduction."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = x
        for i in range(1, 5):
            b7 = getattr(self, f"branch7x7x3_{i}")(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """8×8 block with expanded 1×3 / 3×1 branches. `max_pool`: the TF graph's second E block
    (Mixed_7c) pools with max instead of average, a quirk the reference features keep."""

    def __init__(self, c_in: int, *, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(c_in, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """Images (B, C, H, W) in [-1, 1], C = 1 or 3 → pool3 features (B, 2048).

    Randomly initialised: load a published state dict by name (`load_state_dict`, strict),
    then `fuse_()` for inference. `num_features` lets torchmetrics use it as a custom
    `feature` module.
    """

    num_features = NUM_FEATURES

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(NUM_FEATURES, NUM_LOGITS)  # unused: present so files load by name

    def fuse_(self) -> FIDInceptionV3:
        """Eval mode, BatchNorm folded into each conv: 1.1–1.7× faster on CPU, and as close to
        the float64 features as the unfused float32 net is (both ~1e-4 of the largest feature,
        measured on a random net). The state dict then loses the published names: load
        first."""
        self.eval()
        for m in self.modules():
            if isinstance(m, BasicConv2d):
                m.fuse_()
        return self

    @staticmethod
    def preprocess(images: Tensor) -> Tensor:
        """(B, C, H, W) in [-1, 1] → (B, 3, 299, 299) as the reference feeds the network."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"Inception features need (B, 1 or 3, H, W) images, got "
                             f"{tuple(images.shape)}")
        x = to_uint8(images).to(torch.float32)  # (B, C, H, W) in 0..255, as an image file
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x  # grey → RGB
        x = tf1_resize_bilinear(x, INPUT_SIZE)  # (B, 3, 299, 299)
        return (x - 128) / 128

    def trunk(self, x: Tensor) -> Tensor:
        """(B, 3, 299, 299) normalised → (B, 2048) pool3 features."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (B, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 192, 35, 35)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)  # → (B, 288, 35, 35) → (B, 768, 17, 17)
        # → (B, 2048, 8, 8) after Mixed_7c
        return x.mean(dim=(2, 3))  # (B, 2048) global average pool

    def forward(self, images: Tensor) -> Tensor:
        return self.trunk(self.preprocess(images))
