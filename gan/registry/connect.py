"""The connection to the MLflow tracking server: a client from `Settings`, a fast health probe,
and the registry's error types.

What it is not: no publishing (`gan.registry.publish`), no model loading (`gan.registry.load`).
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request

import mlflow
from mlflow import MlflowClient

from gan.core.settings import Settings

# MLflow error codes that mean "no such model, version, alias or run".
NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE",
                        "ENDPOINT_NOT_FOUND"})


class RegistryError(RuntimeError):
    """The registry refused an operation; the message names the model or URI."""


class ModelNotFoundError(RegistryError, LookupError):
    """A model URI that names nothing: no such model, version, alias, run or directory."""


class ModelIncompatibleError(RegistryError):
    """A model version this code cannot load: its weights do not fit the networks the code
    builds (published by other code). The message names the model URI; nothing else can be
    done with that version than move `@champion` off it (README: moving @champion by hand)."""


class RegistryUnavailable(RegistryError, ConnectionError):
    """The MLflow tracking server does not answer; the message names its URL. A ConnectionError,
    so the flow's `register` task retries it (registration is idempotent per run id)."""


def check_reachable(settings: Settings, *, attempts: int = 3, delay_s: float = 1.0) -> None:
    """Raise RegistryUnavailable naming the URL unless MLflow answers `/health`.

    Why a probe of our own: MLflow's client retries a refused connection with exponential
    backoff for minutes (MLFLOW_HTTP_REQUEST_MAX_RETRIES=7) before failing; probing first makes
    a down server fail the stage in seconds, before anything is written, with its URL named.
    Backoff: delay_s, 2·delay_s, ... between attempts. Any HTTP answer below 500 counts as
    reachable (an auth proxy in front of MLflow may answer 401 to an anonymous probe)."""
    uri = settings.require_mlflow()
    if not uri.startswith(("http://", "https://")):
        return  # a file:/sqlite: store has no server to be down
    last = ""
    for i in range(attempts):
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:  # noqa: S310
                if r.status < 500:
                    return
                last = f"HTTP {r.status}"
        except urllib.error.HTTPError as e:
            if e.code < 500:
                return
            last = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            last = str(getattr(e, "reason", e))
        if i + 1 < attempts:
            time.sleep(delay_s * 2**i)
    raise RegistryUnavailable(f"MLflow tracking server {uri} unreachable after {attempts} "
                              f"attempts ({last}); nothing was registered")


def use_credentials(settings: Settings) -> None:
    """Export `settings`' MLflow identity as MLFLOW_TRACKING_USERNAME / _PASSWORD, where MLflow's
    client (REST calls, artifact proxy downloads) reads it; for this process and its children.
    Without one (an open server) the variables are left as they are."""
    if settings.mlflow_tracking_username and settings.mlflow_tracking_password:
        os.environ["MLFLOW_TRACKING_USERNAME"] = settings.mlflow_tracking_username
        os.environ["MLFLOW_TRACKING_PASSWORD"] = (
            settings.mlflow_tracking_password.get_secret_value())


def client(settings: Settings) -> MlflowClient:
    """A client for `settings`' tracking server, with its identity (`use_credentials`); also
    points MLflow's fluent API there."""
    uri = settings.require_mlflow()
    use_credentials(settings)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)
