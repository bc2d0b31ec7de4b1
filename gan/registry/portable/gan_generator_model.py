"""A published GAN generator, loadable with torch + numpy (+ MLflow) alone.

What this module is: the pyfunc loader module of every model version logged by
`gan.registry.model_format` (MLflow copies this one file into the model's `code/` folder and
imports it as `gan_generator_model`). `_load_pyfunc(<bundle dir>)` rebuilds G from the bundle's
`model_config.json` (JSON, validated here) and fills in `generator.safetensors`: no pickle, no
`gan` package, no code read from anywhere but this file. The safetensors file is read by the
few lines of `read_safetensors` (the format is a JSON header + raw little-endian tensors), so a
client needs neither the `safetensors` package nor anything beyond torch, numpy and MLflow.

pyfunc contract (also the model's signature and input example):
  input, either  {"z": float32 (N, latent_dim), "y": int64 (N,)}   latents you drew
          or     {"n": 64, "seed": 0, "y": [...]}                    a request: z ~ N(0, I)
                 drawn with torch.Generator().manual_seed(seed) (the same z as `gan sample`)
         "y" only for conditional models: N labels, or one label for all; omitted in a
         request, the classes take turns (i % num_classes). Labels are the training data's
         own (the bundle's "class_names", e.g. 1..10 or "cat", "dog"): a name, or an integer
         when the data's labels were integers (7 of a 1..10 set is the class "7"); integers
         0..num_classes-1 where the data had no names (digits) or named its classes by strings
         (then an integer is the class's index in "class_names"). A bare z array also works,
         and so does the one-row DataFrame MLflow's schema check turns a dict into.
  output float32 numpy (N, C, H, W) in [-1, 1] (tanh; r3gan: clamped);
         pixel = round((x + 1) * 127.5)
  limit  one request's output is at most `max_output_bytes` (N·C·H·W·4; default 1 GiB, the
         model's MLflow model_config: `mlflow.pyfunc.load_model(uri, model_config=
         {"max_output_bytes": ...})` raises it); a larger one is refused before anything is
         drawn. Within it, images are drawn `chunk_size` at a time (CHUNK_BYTES of output per
         forward) into one output array.

What it is not: not the pipeline's networks (`gan.nets.models`, `gan.nets.resnet` and
`gan.nets.r3gan` are the source of truth; this copy of every G architecture — `ARCHS`: mlp,
dcgan, dcgan-up, dcgan-deep, resnet, r3gan — is pinned to them by
`tests/unit/test_portable_model.py`, which walks every architecture the CLI offers), no D, no
training, no MLflow calls.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

FORMAT = "gan-generator/1"
CONFIG_FILE = "model_config.json"
GENERATOR_FILE = "generator.safetensors"
EMBED_DIM = 50  # G's label embedding (gan.nets.models.EMBED_DIM)
# Output bytes per forward (`chunk_size`): 2,674 images of 1×28×28, 682 of 3×32×32, 42 of
# 3×128×128. By bytes, not images, so a big model's activations stay bounded; and few forwards
# for small images: a fresh process's first 10,000 images of the default G took ~1.7 s of CPU
# in chunks of 1,024, ~1.1 s in chunks of 2,674 (medians of 5, 2 shared cores; a warm process
# differs less). See docs/pull.md.
CHUNK_BYTES = 8 * 2**20
# One request's output bound (the MLflow model_config key and its default): 1 GiB of float32
# images, e.g. 5,461 images of 3×128×128 or 342,392 of 1×28×28; a bigger request is refused.
MAX_OUTPUT_BYTES_KEY = "max_output_bytes"
MAX_OUTPUT_BYTES = 2**30


class GeneratorFormatError(ValueError):
    """A bundle this module cannot read, or an input it cannot turn into latents."""


# --------------------------------------------------------------------------- G (as gan.nets)


class _Generator(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.latent_dim = int(cfg["latent_dim"])
        self.image_shape = (int(cfg["channels"]), int(cfg["image_size"]), int(cfg["image_size"]))
        self.num_classes = int(cfg["num_classes"])
        self.conditional = bool(cfg["conditional"])
        self.embed = nn.Embedding(self.num_classes, EMBED_DIM) if self.conditional else None
        self.input_dim = self.latent_dim + (EMBED_DIM if self.conditional else 0)

    def _input(self, z: Tensor, y: Tensor | None) -> Tensor:
        if self.embed is None:
            return z  # (B, latent_dim)
        if y is None:
            raise ValueError("this generator is conditional: pass class labels y (B,) int64")
        return torch.cat([z, self.embed(y)], dim=1)  # (B, latent_dim + EMBED_DIM)


class MLPGenerator(_Generator):
    """z → hidden widths with LeakyReLU → C·H·W → tanh."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        layers: list[nn.Module] = []
        width = self.input_dim
        for h in cfg["g_hidden"]:
            layers += [nn.Linear(width, int(h)), nn.LeakyReLU(float(cfg["leaky_slope"]))]
            width = int(h)
        c, hh, ww = self.image_shape
        layers += [nn.Linear(width, c * hh * ww), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(self._input(z, y)).view(z.shape[0], *self.image_shape)  # (B, C, H, W)


class DCGANGenerator(_Generator):
    """z → Linear → (c, H/4, W/4) → ConvT → (c/2, H/2, W/2) → ConvT → (C, H, W), BN + ReLU."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        c_img, h, w = self.image_shape
        c = int(cfg["base_channels"])
        self.start = (c, h // 4, w // 4)
        self.fc = nn.Sequential(nn.Linear(self.input_dim, c * (h // 4) * (w // 4), bias=False),
                                nn.BatchNorm1d(c * (h // 4) * (w // 4)), nn.ReLU(True))
        self.up = nn.Sequential(
            nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2),
            nn.ReLU(True), nn.ConvTranspose2d(c // 2, c_img, 4, 2, 1), nn.Tanh())

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.fc(self._input(z, y)).view(z.shape[0], *self.start)  # (B, c, H/4, W/4)
        return self.up(h)  # (B, C, H, W)


class DeepDCGANGenerator(DCGANGenerator):
    """Radford et al.'s layout: z → (c·2^(k-1), 4, 4) → k ConvT doublings, channels halved each
    time → (C, H, W), BN + ReLU, tanh; k = log2(H/4). Same forward as DCGAN's."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        _Generator.__init__(self, cfg)
        c_img, h, _ = self.image_shape
        k = h.bit_length() - 3  # H = 4·2^k
        widths = [int(cfg["base_channels"]) * 2 ** i for i in reversed(range(k))]  # [.., 2c, c]
        self.start = (widths[0], 4, 4)
        self.fc = nn.Sequential(nn.Linear(self.input_dim, widths[0] * 16, bias=False),
                                nn.BatchNorm1d(widths[0] * 16), nn.ReLU(True))
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths, widths[1:], strict=False):  # (B, c_in, s, s) → 2s
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], c_img, 4, 2, 1), nn.Tanh()]  # (B, C, H, W)
        self.up = nn.Sequential(*layers)


class _GBlock(nn.Module):
    """x (B, c, h, w) → (B, c, 2h, 2w): BN-ReLU-up-conv3-BN-ReLU-conv3 + up-conv1 shortcut."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.BatchNorm2d(c), nn.ReLU(), nn.Upsample(scale_factor=2), nn.Conv2d(c, c, 3, 1, 1),
            nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c, 3, 1, 1))
        self.shortcut = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(c, c, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.residual(x) + self.shortcut(x)


class ResNetGenerator(_Generator):
    """SNGAN G: z → Linear → (c, 4, 4) → log2(H/4) up-blocks → BN-ReLU-conv3 → tanh (C, H, W)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        c_img, h, _ = self.image_shape
        c = self.c = int(cfg["base_channels"])
        self.fc = nn.Linear(self.input_dim, c * 4 * 4)
        self.blocks = nn.Sequential(*[_GBlock(c) for _ in range(h.bit_length() - 3)])
        self.out = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, c_img, 3, 1, 1),
                                 nn.Tanh())

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.fc(self._input(z, y)).view(z.shape[0], self.c, 4, 4)  # (B, c, 4, 4)
        return self.out(self.blocks(h))  # (B, C, H, W)


class DCGANUpGenerator(DCGANGenerator):
    """dcgan-up: DCGAN's G with each ConvT(4, 2, 1) as nearest 2× upsample + Conv2d(3×3)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        c_img, c = self.image_shape[0], int(cfg["base_channels"])
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c // 2, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c // 2), nn.ReLU(True), nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(c // 2, c_img, 3, 1, 1), nn.Tanh())


class _BiasedLeakyReLU(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.leaky_relu(x + self.bias.view(1, -1, 1, 1), 0.2)


class _ResidualBlock(nn.Module):
    """x + conv1(act(grouped conv3(act(conv1(x))))), inner width 2w, 16 channels per group."""

    def __init__(self, w: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(w, 2 * w, 1, bias=False), _BiasedLeakyReLU(2 * w),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1, groups=max(1, 2 * w // 16), bias=False),
            _BiasedLeakyReLU(2 * w), nn.Conv2d(2 * w, w, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class _Upsample(nn.Module):
    """Bilinear 2× by the fixed [1, 3, 3, 1]ᵀ[1, 3, 3, 1]/16 kernel (depthwise, stride 2)."""

    def __init__(self) -> None:
        super().__init__()
        k = torch.tensor([1.0, 3.0, 3.0, 1.0])
        k2 = torch.outer(k, k)
        self.register_buffer("kernel", (k2 / k2.sum())[None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        w = (4.0 * self.kernel).to(x.dtype).expand(x.shape[1], 1, 4, 4)
        return nn.functional.conv_transpose2d(x, w, stride=2, padding=1, groups=x.shape[1])


class R3GANGenerator(_Generator):
    """R3GAN's G: basis (w, s, s) × linear(z) → blocks → [1×1 → up → blocks] → 1×1 conv, no
    tanh: clamped to [-1, 1] in eval mode (`gan.nets.r3gan`)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__(cfg)
        c_img, h, _ = self.image_shape
        s, n_blocks, base = h, int(cfg["blocks_per_stage"]), int(cfg["base_channels"])
        while s % 2 == 0 and s // 2 >= 4:
            s //= 2
        widths = [max(base >> max(0, i - 1), min(base, 16)) for i in range((h // s).bit_length())]
        self.basis = nn.Parameter(torch.zeros(widths[0], s, s))
        self.to_basis = nn.Linear(self.input_dim, widths[0], bias=False)
        stages: list[nn.Module] = [nn.Sequential(*[_ResidualBlock(widths[0])
                                                   for _ in range(n_blocks)])]
        for w_in, w_out in zip(widths, widths[1:], strict=False):
            change = [nn.Conv2d(w_in, w_out, 1, bias=False)] if w_in != w_out else []
            stages.append(nn.Sequential(*change, _Upsample(),
                                        *[_ResidualBlock(w_out) for _ in range(n_blocks)]))
        self.stages = nn.Sequential(*stages)
        self.to_image = nn.Conv2d(widths[-1], c_img, 1, bias=False)

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        a = self.to_basis(self._input(z, y))  # (B, w)
        x = self.to_image(self.stages(self.basis[None] * a[:, :, None, None]))  # (B, C, H, W)
        return x if self.training else x.clamp(-1.0, 1.0)


# Every architecture this file can rebuild (`gan.core.config.ModelConfig.arch`'s values); a
# run whose arch is missing here is refused before training (`model_format.check_publishable`).
GENERATORS: dict[str, type[_Generator]] = {
    "mlp": MLPGenerator, "dcgan": DCGANGenerator, "dcgan-up": DCGANUpGenerator,
    "dcgan-deep": DeepDCGANGenerator, "resnet": ResNetGenerator, "r3gan": R3GANGenerator}
ARCHS = tuple(GENERATORS)
# What each arch reads from the config beyond the common fields, and the sizes it takes.
_ARCH_FIELDS = {"mlp": ("g_hidden", "leaky_slope"), "dcgan": ("base_channels",),
                "dcgan-up": ("base_channels",), "dcgan-deep": ("base_channels",),
                "resnet": ("base_channels",), "r3gan": ("base_channels", "blocks_per_stage")}
_ARCH_SIZES = {"dcgan-deep": (8, 16, 32, 64, 128), "resnet": (16, 32, 64, 128)}


# --------------------------------------------------------------------------- inference form


def _bn_scale_shift(bn: nn.Module) -> tuple[Tensor, Tensor]:
    """Eval-mode batch norm as y = x * scale + shift (per channel)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _fold(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """A Linear / Conv2d / ConvTranspose2d followed by an eval batch norm, as one layer."""
    scale, shift = _bn_scale_shift(bn)
    w = layer.weight
    if isinstance(layer, nn.ConvTranspose2d):
        w = w * scale[None, :, None, None]  # (C_in, C_out, k, k): scale the outputs
    else:
        w = w * scale.reshape(-1, *[1] * (w.dim() - 1))  # (C_out, ...)
    folded = copy.deepcopy(layer)
    folded.weight = nn.Parameter(w)
    folded.bias = nn.Parameter(shift + (layer.bias * scale if layer.bias is not None else 0))
    return folded


def _is_k4s2p1(m: nn.Module) -> bool:
    return (isinstance(m, nn.ConvTranspose2d) and m.kernel_size == (4, 4)
            and m.stride == (2, 2) and m.padding == (1, 1) and m.output_padding == (0, 0)
            and m.groups == 1 and m.dilation == (1, 1))


def _subpixel(ct: nn.ConvTranspose2d) -> nn.Sequential:
    """ConvTranspose2d(k=4, s=2, p=1) as Conv2d(3×3, padding 1) to 4× the channels + pixel
    shuffle: the same function, which CPU conv kernels compute faster.

    Output pixel (2m + a, 2n + b) sees input rows m-1..m+1; its transposed-conv taps are
    ky = a + 3 - 2u for the conv's row u (when 0 <= ky < 4), likewise kx for columns."""
    w = ct.weight  # (C_in, C_out, 4, 4)
    c_in, c_out = w.shape[:2]
    k = w.new_zeros(c_out, 2, 2, c_in, 3, 3)  # (C_out, a, b, C_in, u, v)
    for a in (0, 1):
        for b in (0, 1):
            for u in range(3):
                for v in range(3):
                    ky, kx = a + 3 - 2 * u, b + 3 - 2 * v
                    if 0 <= ky < 4 and 0 <= kx < 4:
                        k[:, a, b, :, u, v] = w[:, :, ky, kx].T
    conv = nn.Conv2d(c_in, 4 * c_out, 3, 1, 1)
    conv.weight = nn.Parameter(k.reshape(4 * c_out, c_in, 3, 3))  # channel = o·4 + a·2 + b
    bias = ct.bias if ct.bias is not None else w.new_zeros(c_out)
    conv.bias = nn.Parameter(bias.repeat_interleave(4))
    return nn.Sequential(conv, nn.PixelShuffle(2))  # (B, 4·C_out, h, w) → (B, C_out, 2h, 2w)


def _fused(seq: nn.Sequential) -> nn.Sequential:
    """A Sequential with each layer + following batch norm folded into one, and each
    ConvTranspose2d(4, 2, 1) as a sub-pixel conv; other children fused recursively."""
    layers = list(seq)
    out: list[nn.Module] = []
    i = 0
    while i < len(layers):
        m = layers[i]
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if (isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))
                and isinstance(nxt, (nn.BatchNorm1d, nn.BatchNorm2d))):
            m, i = _fold(m, nxt), i + 1
        out.append(_subpixel(m) if _is_k4s2p1(m) else _fuse_children(m))
        i += 1
    return nn.Sequential(*out)


def _fuse_children(module: nn.Module) -> nn.Module:
    for name, child in list(module.named_children()):
        setattr(module, name, _fused(child) if isinstance(child, nn.Sequential)
                else _fuse_children(child))
    return module


@torch.no_grad()
def fuse(G: nn.Module) -> nn.Module:
    """G (eval) rewritten for inference, in place: every batch norm that follows a linear or
    conv layer folded into it, transposed convs as sub-pixel convs (a batch norm that opens a
    ResNet block stays). Same outputs up to float rounding (~1e-6), fewer passes over memory;
    the published pt2 program is exported from this form too."""
    return _fuse_children(G.eval()).eval()


# --------------------------------------------------------------------------- the bundle

# safetensors dtype names → torch dtypes (https://github.com/huggingface/safetensors, format)
_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16,
           "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
           "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def read_safetensors(path: str | Path) -> dict[str, Tensor]:
    """A .safetensors file → {name: tensor}: 8-byte little-endian header size, a JSON header
    {name: {"dtype", "shape", "data_offsets": [begin, end]}}, then the raw bytes. Reads bytes
    and JSON only; a malformed file raises GeneratorFormatError naming it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        header = json.loads(raw[8:8 + n])
        if len(raw) < 8 + n or not isinstance(header, dict):
            raise ValueError("truncated header")
        data = bytearray(raw[8 + n:])  # writable, so torch.frombuffer does not warn
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            dtype = _DTYPES[info["dtype"]]
            begin, end = (int(v) for v in info["data_offsets"])
            shape = [int(v) for v in info["shape"]]
            count = math.prod(shape)
            if not 0 <= begin <= end <= len(data) or end - begin != count * dtype.itemsize:
                raise ValueError(f"tensor {name!r}: offsets {begin}..{end} do not fit")
            t = (torch.frombuffer(data, dtype=dtype, count=count, offset=begin) if count
                 else torch.empty(0, dtype=dtype))
            out[name] = t.reshape(shape).clone()  # own memory, not a view of the file buffer
        return out
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise GeneratorFormatError(f"{path}: not a readable safetensors file ({e})") from None



def read_config(bundle_dir: str | Path) -> dict[str, Any]:
    """The bundle's model config (a dict), checked for what building G needs."""
    path = Path(bundle_dir) / CONFIG_FILE
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise GeneratorFormatError(f"{path}: not a readable gan generator config ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise GeneratorFormatError(f"{path}: format is not {FORMAT!r}")
    cfg = doc.get("model_config")
    need = ("arch", "conditional", "latent_dim", "image_size", "channels", "num_classes")
    if not isinstance(cfg, dict) or any(k not in cfg for k in need):
        raise GeneratorFormatError(f"{path}: model_config lacks one of {need}")
    if cfg["arch"] not in GENERATORS:
        raise GeneratorFormatError(f"{path}: unknown arch {cfg['arch']!r} (this loader builds "
                                   f"{', '.join(ARCHS)})")
    if any(k not in cfg for k in _ARCH_FIELDS[cfg["arch"]]):
        raise GeneratorFormatError(f"{path}: model_config of arch {cfg['arch']!r} lacks one of "
                                   f"{_ARCH_FIELDS[cfg['arch']]}")
    sizes = _ARCH_SIZES.get(cfg["arch"])
    if sizes and int(cfg["image_size"]) not in sizes:
        raise GeneratorFormatError(f"{path}: arch {cfg['arch']!r} takes image_size in {sizes}, "
                                   f"got {cfg['image_size']}")
    return cfg


def build_generator(cfg: dict[str, Any]) -> nn.Module:
    """G of the config's arch (random weights: `load_generator` fills them in)."""
    return GENERATORS[cfg["arch"]](cfg)


def load_generator(bundle_dir: str | Path, *, fused: bool = True) -> nn.Module:
    """G from a bundle directory: config → module → safetensors weights (strict), eval mode;
    `fused`: in its inference form (`fuse`), else exactly the pipeline's layers."""
    d = Path(bundle_dir)
    G = build_generator(read_config(d))
    state = read_safetensors(d / GENERATOR_FILE)  # bytes and JSON only: nothing executed
    G.load_state_dict(state, strict=True)
    return fuse(G.eval()) if fused else G.eval()


# --------------------------------------------------------------------------- pyfunc


def int_label(name: str) -> int | None:
    """The integer a class name spells ("7"), else None; as `gan.data.labels` reads it."""
    try:
        value = int(name)
    except ValueError:
        return None
    return value if str(value) == name else None


def chunk_size(image_shape: tuple[int, ...]) -> int:
    """Images per forward: CHUNK_BYTES of float32 output (at least one image)."""
    return max(1, CHUNK_BYTES // (math.prod(image_shape) * 4))


def format_bytes(n: float) -> str:
    """196608 → '192.0 KiB', 2**30 → '1.0 GiB' (binary units, one decimal)."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.1f} {units[i]}"


class GeneratorModel:
    """What `mlflow.pyfunc.load_model(uri)` wraps: a request or latents in, images out.

    `class_names`: the training data's labels of classes 0..K-1 (empty: the labels are the
    integers 0..K-1 themselves); `max_output_bytes`: the most output one request may ask for."""

    def __init__(self, generator: nn.Module, class_names: tuple[str, ...] = (),
                 max_output_bytes: int = MAX_OUTPUT_BYTES) -> None:
        self.generator = generator.eval()
        if isinstance(max_output_bytes, bool) or int(max_output_bytes) < 1:
            raise GeneratorFormatError(f"{MAX_OUTPUT_BYTES_KEY} must be a positive number of "
                                       f"bytes, got {max_output_bytes!r}")
        self.max_output_bytes = int(max_output_bytes)
        self.class_names = tuple(class_names)
        # without names, the labels are 0..K-1 (also accepted as the strings "0".."K-1")
        self._by_name = ({n: i for i, n in enumerate(self.class_names)} if self.class_names
                         else {str(i): i for i in range(int(generator.num_classes))})
        ints = {int_label(n): i for i, n in enumerate(self.class_names)}
        # integer labels name classes only when every name is an integer (a 1..10 set)
        self._by_int = ints if self.class_names and None not in ints else {}

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        z, y = self.parse(model_input)
        n = z.shape[0]
        out = np.empty((n, *self.generator.image_shape), np.float32)  # (N, C, H, W)
        k = chunk_size(self.generator.image_shape)
        with torch.inference_mode():
            for i in range(0, n, k):  # k images at a time into the one output array
                x = self.generator(z[i:i + k], None if y is None else y[i:i + k])
                out[i:i + k] = x.float().numpy()
        return out  # (N, C, H, W) float32 in [-1, 1]

    def check_size(self, n: int) -> None:
        """GeneratorFormatError unless n images fit in `max_output_bytes` (before drawing)."""
        c, h, w = self.generator.image_shape
        per_image = c * h * w * 4  # float32
        if n * per_image > self.max_output_bytes:
            raise GeneratorFormatError(
                f"{n} images of {c}×{h}×{w} float32 are {format_bytes(n * per_image)}, above "
                f"this model's limit of {format_bytes(self.max_output_bytes)} per request: ask "
                f"for at most {self.max_output_bytes // per_image} images per call (e.g. several "
                f"seeds), or raise the limit when loading: mlflow.pyfunc.load_model(uri, "
                f"model_config={{'{MAX_OUTPUT_BYTES_KEY}': <bytes>}})")

    def parse(self, model_input: Any) -> tuple[Tensor, Tensor | None]:
        """Any accepted input form → (z (N, latent_dim) float32, y (N,) int64 | None)."""
        G = self.generator
        doc = _as_dict(model_input)
        if "z" in doc and doc["z"] is not None:
            z = torch.as_tensor(np.asarray(_unlist(doc["z"]), dtype=np.float32))
            if z.ndim == 1 and z.numel() == G.latent_dim:
                z = z.reshape(1, -1)
            if z.ndim != 2 or z.shape[1] != G.latent_dim:
                raise GeneratorFormatError(f"z must have shape (N, {G.latent_dim}), "
                                           f"got {tuple(z.shape)}")
            self.check_size(z.shape[0])
        elif "n" in doc and doc["n"] is not None:
            n = _int(doc["n"], "n")
            if n < 0:
                raise GeneratorFormatError(f"n must be >= 0, got {n}")
            self.check_size(n)  # before z is drawn: a huge n allocates nothing
            seed = _int(doc.get("seed", 0) if doc.get("seed") is not None else 0, "seed")
            z = torch.randn(n, G.latent_dim, generator=torch.Generator().manual_seed(seed))
        else:
            raise GeneratorFormatError(
                f"generator input must be {{'n': N, 'seed': S{', y: labels' * G.conditional}}} "
                f"or {{'z': float32 (N, {G.latent_dim}){', y: int64 (N,)' * G.conditional}}}; "
                f"got keys {sorted(doc)}")
        return z.contiguous(), self._labels(doc.get("y"), z.shape[0], "z" not in doc)

    def _labels(self, y: Any, n: int, request: bool) -> Tensor | None:
        G = self.generator
        if not G.conditional:
            return None
        if y is None:
            if not request:
                raise GeneratorFormatError("this generator is conditional: input needs 'y', "
                                           "int64 (N,) labels")
            return torch.arange(n) % G.num_classes
        arr = np.asarray(_unlist(y)).reshape(-1)
        labels = torch.as_tensor(self._indices(arr))
        if labels.numel() == 1 and n != 1:
            labels = labels.expand(n)
        if labels.numel() != n:
            raise GeneratorFormatError(f"y has {labels.numel()} labels for {n} images")
        return labels.contiguous()

    def _indices(self, arr: np.ndarray) -> np.ndarray:
        """The data's labels (names, or integers; see the module) → class indices (N,)."""
        K = self.generator.num_classes
        known = f"this model's labels ({', '.join(self.class_names)})"
        if arr.size and arr.dtype.kind in "USO":
            names = [str(v) for v in arr.tolist()]
            missing = next((v for v in names if v not in self._by_name), None)
            if missing is not None:
                raise GeneratorFormatError(f"label {missing!r} is not one of " + (
                    known if self.class_names else f"this model's labels 0..{K - 1}"))
            return np.array([self._by_name[v] for v in names], dtype=np.int64)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            if not np.all(np.mod(arr, 1) == 0):
                raise GeneratorFormatError(f"y must hold integer labels, got {arr.dtype}")
        ints = arr.astype(np.int64)
        if self._by_int:
            missing = next((int(v) for v in ints if int(v) not in self._by_int), None)
            if missing is not None:
                raise GeneratorFormatError(f"label {missing} is not one of {known}")
            return np.array([self._by_int[int(v)] for v in ints], dtype=np.int64)
        if ints.size and (int(ints.min()) < 0 or int(ints.max()) >= K):
            raise GeneratorFormatError(f"labels must lie in [0, {K}), got "
                                       f"[{int(ints.min())}, {int(ints.max())}]")
        return ints


def _as_dict(model_input: Any) -> dict[str, Any]:
    if isinstance(model_input, dict):
        return model_input
    if isinstance(model_input, (np.ndarray, Tensor)):
        return {"z": model_input}
    if hasattr(model_input, "to_dict") and hasattr(model_input, "columns"):  # a DataFrame
        if len(model_input) != 1:
            raise GeneratorFormatError(f"a DataFrame input must have one row (one request), got "
                                       f"{len(model_input)}")
        row = model_input.iloc[0]
        return {k: row[k] for k in model_input.columns if not _missing(row[k])}
    raise TypeError(f"generator input must be a dict, got {type(model_input).__name__}")


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _unlist(v: Any) -> Any:
    """A nested list / object array from a JSON request → a plain nested list numpy can stack."""
    if isinstance(v, np.ndarray) and v.dtype == object:
        return [_unlist(x) for x in v]
    return v


def _int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not float(v).is_integer():
        raise GeneratorFormatError(f"{name} must be an integer, got {v!r}")
    return int(v)


def read_class_names(bundle_dir: str | Path) -> tuple[str, ...]:
    """The training data's labels of classes 0..K-1 the bundle records (() when it has none:
    the labels are 0..K-1, as for versions logged before it recorded them)."""
    doc = json.loads((Path(bundle_dir) / CONFIG_FILE).read_text())
    names = doc.get("class_names") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise GeneratorFormatError(f"{Path(bundle_dir) / CONFIG_FILE}: class_names must be a "
                                   "list of strings")
    return tuple(names)


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> GeneratorModel:
    """MLflow's loader-module hook: `data_path` is the local copy of the bundle directory;
    `model_config` the model's pyfunc config with the caller's overrides (max_output_bytes)."""
    limit = (model_config or {}).get(MAX_OUTPUT_BYTES_KEY, MAX_OUTPUT_BYTES)
    return GeneratorModel(load_generator(data_path), read_class_names(data_path),
                          max_output_bytes=limit)
