"""The published generator as an MLflow pyfunc model: safetensors weights, no pickle anywhere.

What this module is: the on-disk *bundle* a registered model version holds and the pyfunc
flavour that serves it.

    <model>/data/gan_generator/
        model_config.json          {"format": "gan-generator/1", "model_config": ModelConfig,
                                    "class_names": [the data's labels of classes 0..K-1], ...}
        generator.safetensors      G's weights (the EMA copy when training kept one)
        discriminator.safetensors  D's weights (anomaly detection / inpainting need them)
        model.pt2                  G exported (the pytorch flavour, below)

Every file and folder of a version costs each consumer's cold load MLflow requests (a listing
per folder; a presigned URL and a download per file, each through the auth app), so a version
holds nothing else: MLflow's MLmodel, conda.yaml, python_env.yaml, requirements.txt, the
loader under code/, and this folder (the request example is in MLmodel's metadata).

A version is self-contained: a client with only torch and MLflow loads it both ways.
- pyfunc: MLflow's "custom loader module" workflow with the loader travelling inside the model
  (`code_paths=[gan/registry/portable/gan_generator_model.py]`, `loader_module=
  "gan_generator_model"`, `data_path=<bundle>`). That one file imports torch and numpy, never
  `gan`; it rebuilds G from `model_config.json` and reads the safetensors weights itself.
- pytorch: `data/gan_generator/model.pt2`, G exported with `torch.export` (batch dimension
  dynamic; versions logged before hold it in `pytorch/`) and
  described as MLflow's `pytorch` flavour, so `mlflow.pytorch.load_model(uri)` returns a
  callable `G(z)` / `G(z, y)` without the class and without pickle (MLflow checks the archive
  is pickle-free before `torch.export.load`; torch >= 2.10).
Why not the alternatives MLflow 3 offers: `mlflow.pytorch` with pickle unpickles arbitrary code
on load; "models from code" executes a script from the artifact store on every load. Here only
tensors (safetensors, the pt2 archive's raw weights) and JSON are read from the store, plus the
loader file this package wrote.
Versions logged before (loader `gan.registry.model_format` or `gan.mlflow_model`) keep loading
through `_load_pyfunc` below, which needs this package installed.

pyfunc contract (also the model signature and the `request_example` metadata; see the portable
module):
  input  {"n": 64, "seed": 0, "y": [...]} (a request) or {"z": float32 (N, latent_dim),
         "y": (N,)} ("y" only for conditional models: the training data's own labels,
         integers or names, `class_names` in the bundle and the model's metadata)
  output float32 (N, C, H, W) in [-1, 1]

What it is not: no MLflow server calls except `log_bundle_model` (which logs into the active
run); registration, aliases and URIs live in `gan.registry.publish`.
"""

from __future__ import annotations

import json
import sys
import threading
import warnings
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model as load_weights
from safetensors.torch import save_model as save_weights
from torch import nn

from gan.core.config import ModelConfig
from gan.nets.models import Discriminator, Generator, build_discriminator, build_generator
from gan.registry.portable import gan_generator_model as portable

FORMAT = "gan-generator/1"
CONFIG_FILE = "model_config.json"
GENERATOR_FILE = "generator.safetensors"
DISCRIMINATOR_FILE = "discriminator.safetensors"
# The loader new versions name: the portable file, copied into the model's code/ folder.
LOADER_MODULE = "gan_generator_model"
PORTABLE_FILE = Path(portable.__file__)
# The pytorch flavour: the exported G beside the bundle's files, <model>/data/<bundle>/model.pt2
# (its own folder would cost every consumer's download one more listing request; versions
# logged before keep <model>/pytorch/model.pt2, which their MLmodel names).
PT2_FILE = "model.pt2"
# The pt2 program's largest batch (its dynamic dimension's bound; a caller's z decides memory).
PT2_MAX_BATCH = 1_000_000
_EXPORT_LOCK = threading.Lock()
# Versions logged before the self-contained format name these loaders (this module; the flat
# layout's `gan.mlflow_model`, kept importable), so they still load with this package installed.
LEGACY_LOADER_MODULES = ("gan.registry.model_format", "gan.mlflow_model")
LOADER_MODULES = (LOADER_MODULE, *LEGACY_LOADER_MODULES)
# Distributions a consumer needs to load the model (pinned to what logged it): not the pipeline.
REQUIRED_DISTS = ("torch", "numpy", "mlflow")


class BundleError(ValueError):
    """A model directory that is not a gan generator bundle, or an inconsistent one."""


class WeightsMismatch(BundleError):
    """A bundle whose weights do not fit the network its config builds with this code (a model
    published by code whose networks have changed since): torch's message says which tensors."""


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
    # safetensors' save_model (not save_file): it drops aliased tensors it cannot store.
    save_weights(generator, str(d / GENERATOR_FILE), metadata={"format": FORMAT})
    if discriminator is not None:
        save_weights(discriminator, str(d / DISCRIMINATOR_FILE), metadata={"format": FORMAT})
    return d


def check_publishable(cfg: ModelConfig) -> None:
    """BundleError unless the portable loader (the one file that travels inside each model)
    rebuilds this config's G with exactly the pipeline's layers: its arch is one the loader
    knows, and both builds name the same tensors with the same shapes. Checked when a run
    resolves its parameters, so a run that could never be registered fails before training.
    Both G are built on the meta device: no memory, no init cost."""
    where = f"{PORTABLE_FILE.name} ({', '.join(portable.ARCHS)})"
    if cfg.arch not in portable.GENERATORS:
        raise BundleError(f"model.arch {cfg.arch!r} cannot be published: the portable loader "
                          f"{where} does not build it; add its generator there "
                          "(pinned to gan.nets by tests/unit/test_portable_model.py)")
    with torch.device("meta"):
        ours = build_generator(cfg).state_dict()
        theirs = portable.build_generator(cfg.model_dump(mode="json")).state_dict()
    diff = sorted((ours.keys() ^ theirs.keys())
                  | {k for k in ours.keys() & theirs.keys() if ours[k].shape != theirs[k].shape})
    if diff:
        raise BundleError(f"model.arch {cfg.arch!r} cannot be published: the portable loader "
                          f"{where} builds a different G (tensors that differ: "
                          f"{', '.join(diff[:5])}); keep it in step with gan.nets")


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
    try:
        load_weights(module, str(path), strict=True)
    except RuntimeError as e:  # torch's load_state_dict: missing, unexpected or resized tensors
        raise WeightsMismatch(
            f"its weights ({path.name}) do not fit the {type(module).__name__} this code "
            f"builds from its {CONFIG_FILE} (published by other code?): {_first_problem(e)}"
        ) from e
    return module.to(device).eval()


def _first_problem(e: RuntimeError) -> str:
    """torch's load_state_dict message cut to its first mismatch and a count of the rest: the
    full list (one line per tensor) would not fit the gate's reasons in a registry tag."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    problems = lines[1:] or lines
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return (problems[0] if problems else type(e).__name__)[:300] + more


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


class GeneratorPyfunc(portable.GeneratorModel):
    """The pyfunc of versions logged before the self-contained format (loader
    `gan.registry.model_format` / `gan.mlflow_model`): the portable model's input parsing and
    contract, around the pipeline's own G."""


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> GeneratorPyfunc:
    """MLflow's loader-module hook: `data_path` is the local copy of the bundle directory."""
    limit = (model_config or {}).get(portable.MAX_OUTPUT_BYTES_KEY, portable.MAX_OUTPUT_BYTES)
    return GeneratorPyfunc(load_generator_from_bundle(data_path),
                           portable.read_class_names(data_path), max_output_bytes=limit)


# --------------------------------------------------------------------------- logging


def _names_are_integers(class_names: tuple[str, ...]) -> bool:
    """True when there are no names (labels 0..K-1) or every name is an integer (1..10)."""
    return all(portable.int_label(n) is not None for n in class_names)


def signature(cfg: ModelConfig, class_names: tuple[str, ...] = ()) -> Any:
    """Optional named inputs (a request n/seed/y, or latents z/y), one (N, C, H, W) output.

    Column-based because a tensor signature cannot mark inputs optional: MLflow turns a dict
    input into a one-row DataFrame, which the portable model reads back. `y` holds the
    training data's labels (`class_names`): integers, or strings when the data named its
    classes by strings (MLflow's schema check would refuse names in an integer column)."""
    # lazy: MLflow (≈2 s) stays out of the old loader's import (gan.mlflow_model)
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema, TensorSpec
    from mlflow.types.schema import Array

    cols = [ColSpec(DataType.long, "n", required=False),
            ColSpec(DataType.long, "seed", required=False),
            ColSpec(Array(Array(DataType.float)), "z", required=False)]
    if cfg.conditional:
        kind = DataType.long if _names_are_integers(class_names) else DataType.string
        cols.append(ColSpec(Array(kind), "y", required=False))
    out = TensorSpec(np.dtype(np.float32), (-1, cfg.channels, cfg.image_size, cfg.image_size))
    return ModelSignature(inputs=Schema(cols), outputs=Schema([out]))


def input_example(cfg: ModelConfig, n: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Latents (and labels) for `n` images: the `z` form of the input."""
    rng = np.random.default_rng(seed)
    ex = {"z": rng.standard_normal((n, cfg.latent_dim)).astype(np.float32)}
    if cfg.conditional:
        ex["y"] = (np.arange(n) % cfg.num_classes).astype(np.int64)
    return ex


def example_labels(cfg: ModelConfig, class_names: tuple[str, ...], n: int) -> list[Any]:
    """`n` labels as a consumer gives them (the classes in turn): the training data's own —
    integers (1, 2, ... for a 1..10 set; 0, 1, ... without names) or names."""
    idx = [i % cfg.num_classes for i in range(n)]
    if not class_names:
        return idx
    if _names_are_integers(class_names):
        return [int(class_names[i]) for i in idx]
    return [class_names[i] for i in idx]


def request_example(cfg: ModelConfig, n: int = 4, seed: int = 0,
                    class_names: tuple[str, ...] = ()) -> dict[str, Any]:
    """The request form of the input, as logged with each model: n images, seeded."""
    ex: dict[str, Any] = {"n": n, "seed": seed}
    if cfg.conditional:
        ex["y"] = example_labels(cfg, class_names, n)
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


def export_pt2(bundle_dir: str | Path, path: str | Path) -> Path:
    """G of a bundle exported with `torch.export` (batch dynamic) and saved to `path`.

    One export at a time per process: `torch.export` traces through process-wide state, and
    two flow runs in one process (e.g. `gan serve`) may register at once."""
    with _EXPORT_LOCK:
        return _export_pt2(bundle_dir, path)


def _export_pt2(bundle_dir: str | Path, path: str | Path) -> Path:
    cfg = read_model_config(bundle_dir)
    G = portable.load_generator(bundle_dir)  # the consumers' code: pt2 and pyfunc agree
    batch = torch.export.Dim("batch", min=1, max=PT2_MAX_BATCH)
    example = input_example(cfg, n=3)
    args: tuple[torch.Tensor, ...] = (torch.from_numpy(example["z"]),)
    shapes: tuple[dict[int, Any], ...] = ({0: batch},)
    if cfg.conditional:
        args += (torch.from_numpy(example["y"]),)
        shapes += ({0: batch},)
    program = torch.export.export(G, args, dynamic_shapes=shapes)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(out))
    return out


def _pyfunc_kwargs(bundle_dir: str | Path, metadata: dict[str, Any] | None) -> dict[str, Any]:
    """What every saved or logged generator model carries: loader, bundle, signature, pins."""
    cfg = read_model_config(bundle_dir)
    names = portable.read_class_names(bundle_dir)
    return {"loader_module": LOADER_MODULE, "data_path": str(bundle_dir),
            "code_paths": [str(PORTABLE_FILE)],
            # The request example goes in the metadata, not as MLflow's input example: that
            # writes two more files (input_example.json, serving_input_example.json): two more
            # request pairs in every consumer's download, for an example the signature and
            # this metadata already give.
            "signature": signature(cfg, names),
            # a request's output bound, overridable by load_model(uri, model_config={...})
            "model_config": {portable.MAX_OUTPUT_BYTES_KEY: portable.MAX_OUTPUT_BYTES},
            "pip_requirements": pip_requirements(),
            "metadata": {"gan_format": FORMAT, "latent_dim": cfg.latent_dim,
                         "request_example": request_example(cfg, class_names=names),
                         **_shape_metadata(cfg, names), **(metadata or {})}}


def save_model(path: str, mlflow_model: Any, *, bundle_dir: str | Path, **kwargs: Any) -> None:
    """The flavour hook `mlflow.models.Model.log` calls: the pyfunc model (portable loader +
    bundle) plus the `pytorch` flavour pointing at the exported G."""
    import mlflow  # lazy: see `signature`

    with warnings.catch_warnings():  # no input example on purpose (see `_pyfunc_kwargs`)
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        mlflow.pyfunc.save_model(path, mlflow_model=mlflow_model, **kwargs)
    data = mlflow_model.flavors["python_function"]["data"]  # "data/<bundle dir name>"
    export_pt2(bundle_dir, Path(path) / data / PT2_FILE)
    mlflow_model.add_flavor("pytorch", model_data=data, pytorch_version=str(torch.__version__),
                            code=None)
    mlflow_model.save(str(Path(path) / "MLmodel"))


def _shape_metadata(cfg: ModelConfig, class_names: tuple[str, ...] = ()) -> dict[str, Any]:
    """What a consumer needs to know before loading: the image shape [C, H, W] (C = 1 grey,
    3 RGB), whether to pass class labels, how many classes there are and their labels in the
    training data (`class_names` of classes 0..K-1; absent: the labels are 0..K-1; the pt2
    flavour takes the indices 0..K-1)."""
    meta = {"image_shape": [cfg.channels, cfg.image_size, cfg.image_size],
            "conditional": cfg.conditional,
            "num_classes": cfg.num_classes if cfg.conditional else 0}
    if cfg.conditional and class_names:
        meta["class_names"] = list(class_names)
    return meta


def log_bundle_model(name: str, bundle_dir: str | Path, *,
                     metadata: dict[str, Any] | None = None) -> Any:
    """Log a bundle (both flavours) into the ACTIVE MLflow run; returns MLflow's ModelInfo."""
    from mlflow.models import Model  # lazy: see `signature`

    return Model.log(artifact_path=None, name=name, flavor=sys.modules[__name__],
                     bundle_dir=bundle_dir,
                     flavor_name="python_function", **_pyfunc_kwargs(bundle_dir, metadata))


def save_bundle_model(path: str | Path, bundle_dir: str | Path, *,
                      metadata: dict[str, Any] | None = None) -> Path:
    """Write a bundle as a local MLflow model directory, both flavours (no server needed)."""
    from mlflow.models import Model  # lazy: see `signature`

    save_model(str(path), Model(), bundle_dir=bundle_dir, **_pyfunc_kwargs(bundle_dir, metadata))
    return Path(path)
