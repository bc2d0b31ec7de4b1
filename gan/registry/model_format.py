"""The published generator as an MLflow pyfunc model: safetensors weights, no pickle anywhere.

What this module is: the on-disk *bundle* a registered model version holds and the pyfunc
flavour that serves it.

    <model>/data/
        model_config.json          {"format": "gan-generator/1", "model_config": ModelConfig, ...}
        generator.safetensors      G's weights (the EMA copy when training kept one)
        discriminator.safetensors  D's weights (anomaly detection / inpainting need them)

The pyfunc flavour is MLflow's "custom loader module" workflow
(`loader_module="gan.registry.model_format"`, `data_path=<bundle>`): `mlflow.pyfunc.load_model`
imports THIS installed module and calls `_load_pyfunc(<bundle>)`, which rebuilds G with
`gan.nets.models.build_generator` and fills in the
weights with `safetensors`. Why this and not the alternatives MLflow 3 offers:
- `mlflow.pytorch` (pickle format) unpickles arbitrary code on load;
- `mlflow.pytorch` with `serialization_format="pt2"` (torch.export) fixes the batch size
  unless dynamic shapes are declared, and loses `gan.nets.models`' interface (labels, attributes);
- "models from code" (`python_model=<file.py>`) executes a script stored in the artifact
  store on every load. Here nothing executable is read from the store: only tensors
  (safetensors) and JSON validated by `ModelConfig`.
The price: a consumer needs the `gan-retrain` package installed (listed in the model's
requirements), exactly as `gan.registry.load.load_generator` does.

pyfunc contract (also the model signature):
  input  {"z": float32 (N, latent_dim), "y": int64 (N,)}  ("y" only for conditional models;
         an unconditional model also takes the bare z array)
  output float32 (N, C, H, W) in [-1, 1]

What it is not: no MLflow server calls except `log_bundle_model` (which logs into the active
run); registration, aliases and URIs live in `gan.registry.publish`.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from gan.core.config import ModelConfig
from gan.nets.models import Discriminator, Generator, build_discriminator, build_generator

FORMAT = "gan-generator/1"
CONFIG_FILE = "model_config.json"
GENERATOR_FILE = "generator.safetensors"
DISCRIMINATOR_FILE = "discriminator.safetensors"
LOADER_MODULE = "gan.registry.model_format"
# Versions logged before the package layout (flat `gan/`) name this loader; `gan/mlflow_model.py`
# keeps that path importable so they still load.
LEGACY_LOADER_MODULES = ("gan.mlflow_model",)
LOADER_MODULES = (LOADER_MODULE, *LEGACY_LOADER_MODULES)
# Distributions a consumer needs to load the model (pinned to what logged it).
REQUIRED_DISTS = ("gan-retrain", "torch", "safetensors", "numpy", "pydantic",
                  "pydantic-settings", "mlflow")


class BundleError(ValueError):
    """A model directory that is not a gan generator bundle, or an inconsistent one."""


# --------------------------------------------------------------------------- the bundle


def write_bundle(directory: str | Path, cfg: ModelConfig, generator: nn.Module,
                 discriminator: nn.Module | None = None, *,
                 meta: dict[str, Any] | None = None) -> Path:
    """Write config + weights into `directory` (created); returns it. Tensors only, no pickle."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "model_config": cfg.model_dump(mode="json"),
           "has_discriminator": discriminator is not None, **(meta or {})}
    (d / CONFIG_FILE).write_text(json.dumps(doc, indent=2, sort_keys=True))
    # save_model (not save_file): it drops aliased tensors that safetensors cannot store.
    save_model(generator, str(d / GENERATOR_FILE), metadata={"format": FORMAT})
    if discriminator is not None:
        save_model(discriminator, str(d / DISCRIMINATOR_FILE), metadata={"format": FORMAT})
    return d


def read_bundle_meta(directory: str | Path) -> dict[str, Any]:
    """The parsed `model_config.json` of a bundle; BundleError names the file when it is wrong."""
    path = Path(directory) / CONFIG_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path} is missing: not a gan generator model") from None
    except json.JSONDecodeError as e:
        raise BundleError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise BundleError(f"{path}: format {found!r}, expected {FORMAT!r}")
    return doc


def read_model_config(directory: str | Path) -> ModelConfig:
    doc = read_bundle_meta(directory)
    try:
        return ModelConfig(**doc["model_config"])
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"{Path(directory) / CONFIG_FILE}: bad model_config: {e}") from None


def _fill(module: nn.Module, path: Path, device: torch.device | str) -> nn.Module:
    if not path.exists():
        raise BundleError(f"{path} is missing")
    # strict: a weights file that does not match the config fails here, not at sampling time.
    load_model(module, str(path), strict=True)
    return module.to(device).eval()


def load_generator_from_bundle(directory: str | Path,
                               device: torch.device | str = "cpu") -> Generator:
    """G rebuilt from a bundle: `build_generator(config)` + safetensors weights, eval mode."""
    d = Path(directory)
    G = build_generator(read_model_config(d))
    return _fill(G, d / GENERATOR_FILE, device)  # type: ignore[return-value]


def load_discriminator_from_bundle(directory: str | Path,
                                   device: torch.device | str = "cpu") -> Discriminator:
    """D rebuilt from a bundle, eval mode; BundleError when the bundle holds no D."""
    d = Path(directory)
    D = build_discriminator(read_model_config(d))
    return _fill(D, d / DISCRIMINATOR_FILE, device)  # type: ignore[return-value]


# --------------------------------------------------------------------------- pyfunc


class GeneratorPyfunc:
    """What `mlflow.pyfunc.load_model(...)` wraps: latents (and labels) in, images out."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator.eval()

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        z, y = self._parse(model_input)
        dev = next(self.generator.parameters()).device
        with torch.inference_mode():
            x = self.generator(torch.from_numpy(z).to(dev),
                               None if y is None else torch.from_numpy(y).to(dev))
        return x.float().cpu().numpy()  # (N, C, H, W) float32 in [-1, 1]

    def _parse(self, model_input: Any) -> tuple[np.ndarray, np.ndarray | None]:
        G = self.generator
        if isinstance(model_input, np.ndarray):
            model_input = {"z": model_input}
        if not isinstance(model_input, dict) or "z" not in model_input:
            labels = ", 'y': int64 (N,)" if G.conditional else ""
            raise TypeError(f"generator input must be {{'z': float32 (N, {G.latent_dim}){labels}}}"
                            f", got {type(model_input).__name__}")
        z = np.ascontiguousarray(model_input["z"], dtype=np.float32)
        if z.ndim != 2 or z.shape[1] != G.latent_dim:
            raise ValueError(f"z must have shape (N, {G.latent_dim}), got {z.shape}")
        if not G.conditional:
            return z, None
        if model_input.get("y") is None:
            raise ValueError("this generator is conditional: input needs 'y' int64 (N,)")
        y = np.ascontiguousarray(model_input["y"]).astype(np.int64).reshape(-1)
        if y.shape[0] != z.shape[0]:
            raise ValueError(f"y has {y.shape[0]} labels for {z.shape[0]} latents")
        if y.size and (y.min() < 0 or y.max() >= G.num_classes):
            raise ValueError(f"labels must lie in [0, {G.num_classes}), got "
                             f"[{y.min()}, {y.max()}]")
        return z, y


def _load_pyfunc(data_path: str) -> GeneratorPyfunc:
    """MLflow's loader-module hook: `data_path` is the local copy of the bundle directory."""
    return GeneratorPyfunc(load_generator_from_bundle(data_path))


# --------------------------------------------------------------------------- logging


def signature(cfg: ModelConfig) -> Any:
    """The tensor signature: named inputs z (and y), one (N, C, H, W) float32 output."""
    # lazy: MLflow (≈2 s) stays out of the model loader's import (gan.mlflow_model)
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    inputs = [TensorSpec(np.dtype(np.float32), (-1, cfg.latent_dim), "z")]
    if cfg.conditional:
        inputs.append(TensorSpec(np.dtype(np.int64), (-1,), "y"))
    out = TensorSpec(np.dtype(np.float32), (-1, cfg.channels, cfg.image_size, cfg.image_size))
    return ModelSignature(inputs=Schema(inputs), outputs=Schema([out]))


def input_example(cfg: ModelConfig, n: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ex = {"z": rng.standard_normal((n, cfg.latent_dim)).astype(np.float32)}
    if cfg.conditional:
        ex["y"] = (np.arange(n) % cfg.num_classes).astype(np.int64)
    return ex


def pip_requirements() -> list[str]:
    """Exact versions of what this process runs; written, not inferred (inference would
    load the model in a subprocess on every log)."""
    reqs = []
    for name in REQUIRED_DISTS:
        try:
            reqs.append(f"{name}=={dist_version(name).split('+')[0]}")
        except PackageNotFoundError:
            reqs.append(name)
    return reqs


def _pyfunc_kwargs(bundle_dir: str | Path, metadata: dict[str, Any] | None) -> dict[str, Any]:
    """What every saved or logged generator model carries: loader, bundle, signature, pins."""
    cfg = read_model_config(bundle_dir)
    return {"loader_module": LOADER_MODULE, "data_path": str(bundle_dir),
            "signature": signature(cfg), "input_example": input_example(cfg),
            "pip_requirements": pip_requirements(),
            "metadata": {"gan_format": FORMAT, **_shape_metadata(cfg), **(metadata or {})}}


def _shape_metadata(cfg: ModelConfig) -> dict[str, Any]:
    """What a consumer needs to know before loading: the image shape [C, H, W] (C = 1 grey,
    3 RGB) and whether to pass class labels (and how many classes there are)."""
    return {"image_shape": [cfg.channels, cfg.image_size, cfg.image_size],
            "conditional": cfg.conditional,
            "num_classes": cfg.num_classes if cfg.conditional else 0}


def log_bundle_model(name: str, bundle_dir: str | Path, *,
                     metadata: dict[str, Any] | None = None) -> Any:
    """Log a bundle as a pyfunc model into the ACTIVE MLflow run; returns MLflow's ModelInfo."""
    import mlflow  # lazy: see `signature`

    return mlflow.pyfunc.log_model(name=name, **_pyfunc_kwargs(bundle_dir, metadata))


def save_bundle_model(path: str | Path, bundle_dir: str | Path, *,
                      metadata: dict[str, Any] | None = None) -> Path:
    """Write a bundle as a local MLflow pyfunc model directory (no tracking server needed)."""
    import mlflow  # lazy: see `signature`

    mlflow.pyfunc.save_model(str(path), **_pyfunc_kwargs(bundle_dir, metadata))
    return Path(path)
