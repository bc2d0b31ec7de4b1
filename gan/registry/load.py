"""Loading a published generator: the consumers' entry points.

What this module is: `load_generator` / `load_discriminator` (a torch module from a model URI:
`models:/<name>@<alias>`, `models:/<name>/<version>`, `runs:/...` or a local MLflow model
directory), `download_model` (the bundle directory) and `resolve_uri` (a `models:/` URI looked
up on `Settings`' server, never on MLflow's process-wide default registry).

What it is not: no publishing (`gan.registry.publish`); no weights format (`model_format`).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from safetensors import SafetensorError

from gan.core.settings import Settings
from gan.nets.models import Discriminator, Generator
from gan.registry import model_format as mlflow_model
from gan.registry.connect import (
    NOT_FOUND_CODES,
    ModelIncompatibleError,
    ModelNotFoundError,
    RegistryError,
    check_reachable,
    use_credentials,
)


def download_model(uri: str, dst: str | Path, *, settings: Settings | None = None) -> Path:
    """Fetch a model into `dst` (a local directory is used as is); returns its bundle dir."""
    local = Path(uri) if "://" not in uri and ":/" not in uri else None
    if local is not None:
        if not (local / "MLmodel").is_file():
            raise ModelNotFoundError(f"model {uri!r}: no MLflow model directory there")
    else:
        settings = settings or Settings.load()
        tracking = settings.require_mlflow()
        check_reachable(settings, attempts=2)  # seconds, not MLflow's minutes of retries
        use_credentials(settings)
        c = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
        try:
            local = Path(mlflow.artifacts.download_artifacts(
                artifact_uri=resolve_uri(c, uri), dst_path=str(dst), tracking_uri=tracking,
                registry_uri=tracking))
        except MlflowException as e:
            cls = ModelNotFoundError if e.error_code in NOT_FOUND_CODES else RegistryError
            raise cls(f"model {uri!r} not found at MLflow {tracking}: {e.message}") from e
        except OSError as e:
            raise RegistryError(f"model {uri!r}: download from MLflow {tracking} failed: {e}"
                                ) from e
    conf = Model.load(str(local / "MLmodel")).flavors.get("python_function", {})
    if conf.get("loader_module") not in mlflow_model.LOADER_MODULES or "data" not in conf:
        raise mlflow_model.BundleError(
            f"model {uri!r} is not a gan generator (loader {conf.get('loader_module')!r})")
    bundle = (local / str(conf["data"])).resolve()
    if not bundle.is_relative_to(local.resolve()):
        raise mlflow_model.BundleError(
            f"model {uri!r}: its MLmodel names data {conf['data']!r}, outside the model "
            "directory: refused")
    return local / conf["data"]


def resolve_uri(c: MlflowClient, uri: str) -> str:
    """`models:/...` → the artifact location it names, looked up with client `c`.

    Why: MLflow resolves `models:/` URIs against its process-wide default registry whatever
    registry URI `download_artifacts` is given (mlflow 3.17: ModelsArtifactRepository calls
    `mlflow.get_registry_uri()`), and without MLFLOW_TRACKING_URI that default is a new
    `./mlflow.db`. Resolving here with an explicit client keeps every lookup on `Settings`'
    server. Other URIs (`runs:/`, `mlflow-artifacts:/`, ...) honour the given tracking URI."""
    if not uri.startswith("models:/"):
        return uri
    ref, _, sub = uri.removeprefix("models:/").partition("/")
    name, at, alias = ref.partition("@")
    if at:
        location = c.get_model_version_download_uri(
            name, c.get_model_version_by_alias(name, alias).version)
    elif sub and sub.split("/")[0].isdigit():
        version, _, sub = sub.partition("/")
        location = c.get_model_version_download_uri(name, version)
    elif not sub:  # models:/<model_id>: a logged model
        location = c.get_logged_model(name).artifact_location
    else:
        raise ModelNotFoundError(f"model {uri!r}: use models:/<name>@<alias>, "
                                 "models:/<name>/<version> or models:/<model id>")
    if location.startswith("models:/") and location != uri:  # a version whose source is
        location = resolve_uri(c, location)                   # its logged model's models:/<id>
    return f"{location.rstrip('/')}/{sub}" if sub else location


def load_generator(uri: str, *, settings: Settings | None = None,
                   device: torch.device | str = "cpu") -> Generator:
    """The published G as a torch module in eval mode on `device`. `settings`: where MLflow
    is (default `Settings.load()`); raises ModelNotFoundError naming a URI that names nothing,
    ModelIncompatibleError one whose weights do not fit this code's networks."""
    with tempfile.TemporaryDirectory(prefix="gan-load-") as tmp, _weights_errors(uri):
        return mlflow_model.load_generator_from_bundle(
            download_model(uri, tmp, settings=settings), device)


def load_discriminator(uri: str, *, settings: Settings | None = None,
                       device: torch.device | str = "cpu") -> Discriminator:
    """The D published with the generator (same URI forms as `load_generator`)."""
    with tempfile.TemporaryDirectory(prefix="gan-load-") as tmp, _weights_errors(uri):
        return mlflow_model.load_discriminator_from_bundle(
            download_model(uri, tmp, settings=settings), device)


@contextlib.contextmanager
def _weights_errors(uri: str) -> Iterator[None]:
    """A weights file that is not safetensors (e.g. a pickle planted in the store) is refused
    by the safetensors parser without executing anything; weights that do not fit the networks
    this code builds (`ModelIncompatibleError`) are the registry's error; both name the model."""
    try:
        yield
    except SafetensorError as e:
        raise mlflow_model.BundleError(
            f"model {uri!r}: its weights are not a valid safetensors file; refused, nothing "
            f"was executed ({e})") from e
    except mlflow_model.WeightsMismatch as e:
        raise ModelIncompatibleError(f"model {uri!r}: {e}") from e
