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
  output float32 numpy (N, C, H, W) in [-1, 1] (tanh); pixel = round((x + 1) * 127.5)

What it is not: not the pipeline's networks (`gan.nets.models` is the source of truth; this
copy of G's two architectures is pinned to it by `tests/unit/test_portable_model.py`), no D,
no training, no MLflow calls.
"""

from __future__ import annotations

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
CHUNK = 1024  # images per forward: activations stay in cache (measured faster than 4096)
MAX_N = 1_000_000  # a request larger than this is refused (≈3 GB of 28×28 float32)


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


# --------------------------------------------------------------------------- inference form


def _bn_scale_shift(bn: nn.Module) -> tuple[Tensor, Tensor]:
    """Eval-mode batch norm as y = x * scale + shift (per channel)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


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


@torch.no_grad()
def fuse(G: nn.Module) -> nn.Module:
    """G (eval) rewritten for inference, in place: batch norms folded into the layer before,
    transposed convs as sub-pixel convs. Same outputs up to float rounding (~1e-6), fewer
    passes over memory; the published pt2 program is exported from this form too."""
    if not isinstance(G, DCGANGenerator):
        return G.eval()
    lin, bn1 = G.fc[0], G.fc[1]
    scale, shift = _bn_scale_shift(bn1)
    fc = nn.Linear(lin.in_features, lin.out_features)
    fc.weight = nn.Parameter(lin.weight * scale[:, None])
    fc.bias = nn.Parameter(shift + (lin.bias * scale if lin.bias is not None else 0))
    ct1, bn2, ct2 = G.up[0], G.up[1], G.up[3]
    scale, shift = _bn_scale_shift(bn2)
    folded = nn.ConvTranspose2d(ct1.in_channels, ct1.out_channels, 4, 2, 1)
    folded.weight = nn.Parameter(ct1.weight * scale[None, :, None, None])
    folded.bias = nn.Parameter(shift + (ct1.bias * scale if ct1.bias is not None else 0))
    G.fc = nn.Sequential(fc, nn.ReLU(True))
    G.up = nn.Sequential(_subpixel(folded), nn.ReLU(True), _subpixel(ct2), nn.Tanh())
    return G.eval()


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
    if cfg["arch"] not in ("mlp", "dcgan"):
        raise GeneratorFormatError(f"{path}: unknown arch {cfg['arch']!r}")
    return cfg


def build_generator(cfg: dict[str, Any]) -> nn.Module:
    return MLPGenerator(cfg) if cfg["arch"] == "mlp" else DCGANGenerator(cfg)


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


class GeneratorModel:
    """What `mlflow.pyfunc.load_model(uri)` wraps: a request or latents in, images out.

    `class_names`: the training data's labels of classes 0..K-1 (empty: the labels are the
    integers 0..K-1 themselves)."""

    def __init__(self, generator: nn.Module, class_names: tuple[str, ...] = ()) -> None:
        self.generator = generator.eval()
        self.class_names = tuple(class_names)
        # without names, the labels are 0..K-1 (also accepted as the strings "0".."K-1")
        self._by_name = ({n: i for i, n in enumerate(self.class_names)} if self.class_names
                         else {str(i): i for i in range(int(generator.num_classes))})
        ints = {int_label(n): i for i, n in enumerate(self.class_names)}
        # integer labels name classes only when every name is an integer (a 1..10 set)
        self._by_int = ints if self.class_names and None not in ints else {}

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        z, y = self.parse(model_input)
        with torch.inference_mode():
            out = [self.generator(z[i:i + CHUNK], None if y is None else y[i:i + CHUNK])
                   for i in range(0, z.shape[0], CHUNK)]
        if not out:
            return np.zeros((0, *self.generator.image_shape), np.float32)
        return torch.cat(out).float().numpy()  # (N, C, H, W) float32 in [-1, 1]

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
        elif "n" in doc and doc["n"] is not None:
            n = _int(doc["n"], "n")
            if not 0 <= n <= MAX_N:
                raise GeneratorFormatError(f"n must lie in [0, {MAX_N}], got {n}")
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


def _load_pyfunc(data_path: str) -> GeneratorModel:
    """MLflow's loader-module hook: `data_path` is the local copy of the bundle directory."""
    return GeneratorModel(load_generator(data_path), read_class_names(data_path))
