"""Where the services are: `Settings`, read once from the environment and the local stack's state.

What this module is: `Settings` (pydantic-settings; `Settings.load()` is the one place that reads
environment variables) and `SettingsError`, whose message names the variable as the user sets it.

What it is not: it builds no client and opens no connection (the S3 clients are built in
`gan.io.storage` from a `Settings`); the run's knobs are the config tree in `gan.core.config`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gan.core.errors import explain

# The stack's MLflow server workers: the default is picked from `gan bench --load` (README,
# "Configuration"); each worker is a process of its own (~250 MB), so the cap stays modest.
MLFLOW_WORKERS_DEFAULT = 4
MLFLOW_WORKERS_MAX = 32


class SettingsError(ValueError):
    """A missing or invalid environment value; the message names the variable."""


def _alias(*names: str) -> Any:
    return AliasChoices(*names)


class Settings(BaseSettings):
    """Where the services are. Read once (`Settings.load()`), then passed down.

    Precedence: environment variables, then the local stack's state in `GAN_HOME`
    (`stack.json` for URLs). S3 keys: with GAN_S3_ENDPOINT_URL set, AWS_* from the environment;
    without it, the local stack's `credentials.json` (mode 0600). MLflow and Prefect
    credentials: MLFLOW_TRACKING_USERNAME / _PASSWORD and PREFECT_API_AUTH_STRING, else (for the
    local stack's URLs) `mlflow-admin.json` and `prefect-auth` (0600).
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    gan_home: Path = Field(Path(".gan"), validation_alias=_alias("GAN_HOME"))
    s3_endpoint_url: str | None = Field(None, validation_alias=_alias("GAN_S3_ENDPOINT_URL"))
    s3_bucket: str = Field(
        "gan", validation_alias=_alias("GAN_S3_BUCKET"),
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
    )
    aws_access_key_id: SecretStr | None = Field(None, validation_alias=_alias("AWS_ACCESS_KEY_ID"))
    aws_secret_access_key: SecretStr | None = Field(
        None, validation_alias=_alias("AWS_SECRET_ACCESS_KEY")
    )
    aws_default_region: str = Field("us-east-1", validation_alias=_alias("AWS_DEFAULT_REGION"))
    mlflow_tracking_uri: str | None = Field(None, validation_alias=_alias("MLFLOW_TRACKING_URI"))
    prefect_api_url: str | None = Field(None, validation_alias=_alias("PREFECT_API_URL"))
    ray_address: str | None = Field(None, validation_alias=_alias("RAY_ADDRESS"))
    # Credentials for MLflow (basic auth) and Prefect (API auth string): from the environment,
    # else the local stack's secret files when the URL is the local stack's (see `load`).
    mlflow_tracking_username: str | None = Field(
        None, validation_alias=_alias("MLFLOW_TRACKING_USERNAME"))
    mlflow_tracking_password: SecretStr | None = Field(
        None, validation_alias=_alias("MLFLOW_TRACKING_PASSWORD"))
    prefect_api_auth_string: SecretStr | None = Field(
        None, validation_alias=_alias("PREFECT_API_AUTH_STRING"))
    # Ports of the local stack (only used when this machine runs the stack).
    s3_port: int = Field(8333, ge=1024, le=65535, validation_alias=_alias("GAN_S3_PORT"))
    mlflow_port: int = Field(5000, ge=1024, le=65535, validation_alias=_alias("GAN_MLFLOW_PORT"))
    # Worker processes of the stack's `mlflow server` (`--workers`); see README "Configuration".
    mlflow_workers: int = Field(MLFLOW_WORKERS_DEFAULT, ge=1, le=MLFLOW_WORKERS_MAX,
                                validation_alias=_alias("GAN_MLFLOW_WORKERS"))
    prefect_port: int = Field(4200, ge=1024, le=65535, validation_alias=_alias("GAN_PREFECT_PORT"))
    # The stack's Ray head: its GCS port, and the CPUs it offers (unset: all of this machine's).
    ray_port: int = Field(6390, ge=1024, le=65535, validation_alias=_alias("GAN_RAY_PORT"))
    ray_cpus: int | None = Field(None, ge=1, validation_alias=_alias("GAN_RAY_CPUS"))
    # On a cluster (RAY_ADDRESS): a custom resource each training worker also requests (one
    # unit), so workers go only to nodes that advertise it (KubeRay: the worker groups'
    # rayStartParams `resources`); unset: CPUs (and GPUs) only. Ignored by a local Ray.
    ray_worker_resource: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
        validation_alias=_alias("GAN_RAY_WORKER_RESOURCE"))
    # Schedule of the stack's `gan serve` deployment (cron, UTC); "off" = runs start only from
    # the UI/API. Test stacks set "off" so a suite running at 03:00 never starts a retrain.
    serve_cron: str = Field("0 3 * * *", validation_alias=_alias("GAN_SERVE_CRON"))
    # The store that keeps `gan stack backup s3://...` copies (never the stack's own keys).
    backup_s3_endpoint_url: str | None = Field(
        None, validation_alias=_alias("GAN_BACKUP_S3_ENDPOINT_URL"))
    backup_aws_access_key_id: SecretStr | None = Field(
        None, validation_alias=_alias("GAN_BACKUP_AWS_ACCESS_KEY_ID"))
    backup_aws_secret_access_key: SecretStr | None = Field(
        None, validation_alias=_alias("GAN_BACKUP_AWS_SECRET_ACCESS_KEY"))

    @field_validator("s3_endpoint_url", "mlflow_tracking_uri", "prefect_api_url",
                     "backup_s3_endpoint_url")
    @classmethod
    def _http_url(cls, v: str | None, info: Any) -> str | None:
        if v is None or v == "":
            return None
        if info.field_name == "mlflow_tracking_uri" and not v.startswith(("http://", "https://")):
            # file: or sqlite: stores are allowed for MLflow but not for S3 or Prefect.
            return v
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {v!r}")
        return v.rstrip("/")

    # True when GAN_S3_ENDPOINT_URL was set: the user's own store, no local SeaweedFS.
    s3_external: bool = Field(False, exclude=True)
    # True when ray_address came from the stack's state (its Ray head), not from RAY_ADDRESS:
    # training then falls back to a Ray of its own when that head is down.
    ray_from_stack: bool = Field(False, exclude=True)

    @classmethod
    def load(cls) -> Settings:
        """Read the environment once and fill gaps from the local stack's state."""
        try:
            raw = cls()
        except ValidationError as e:
            raise SettingsError("invalid environment: " + explain(e, values=False)) from None
        external = raw.s3_endpoint_url is not None
        return raw.model_copy(update={"s3_external": external})._with_stack_state()

    # ---- derived values

    @property
    def state_file(self) -> Path:
        return self.gan_home / "stack.json"

    @property
    def credentials_file(self) -> Path:
        return self.gan_home / "credentials.json"

    @property
    def mlflow_admin_file(self) -> Path:
        """The local MLflow's admin identity, used by the pipeline (0600, `gan stack up`)."""
        return self.gan_home / "mlflow-admin.json"

    @property
    def mlflow_consumer_file(self) -> Path:
        """The local MLflow's read-only identity for consumers (0600, `gan stack up`)."""
        return self.gan_home / "mlflow-consumer.json"

    @property
    def prefect_auth_file(self) -> Path:
        """The local Prefect server's API auth string `user:secret` (0600, `gan stack up`)."""
        return self.gan_home / "prefect-auth"

    @property
    def ray_token_file(self) -> Path:
        """The local Ray head's authentication token (0600, written by `gan stack up`)."""
        return self.gan_home / "ray-token"

    def s3_uri(self, *parts: str) -> str:
        """`s3://<bucket>/<parts joined by />`."""
        key = "/".join(p.strip("/") for p in parts if p)
        return f"s3://{self.s3_bucket}/{key}" if key else f"s3://{self.s3_bucket}"

    def require_s3(self) -> tuple[str, str, str]:
        """(endpoint, key id, secret) or a SettingsError naming what is missing."""
        missing = [
            name
            for name, val in (
                ("GAN_S3_ENDPOINT_URL", self.s3_endpoint_url),
                ("AWS_ACCESS_KEY_ID", self.aws_access_key_id),
                ("AWS_SECRET_ACCESS_KEY", self.aws_secret_access_key),
            )
            if not val
        ]
        if missing:
            raise SettingsError(
                f"object storage is not configured: {', '.join(missing)} unset and no local "
                f"stack state in {self.gan_home} (run `gan stack up` or set them)"
            )
        assert self.aws_access_key_id and self.aws_secret_access_key and self.s3_endpoint_url
        return (
            self.s3_endpoint_url,
            self.aws_access_key_id.get_secret_value(),
            self.aws_secret_access_key.get_secret_value(),
        )

    def require_mlflow(self) -> str:
        return self._required(self.mlflow_tracking_uri, "MLFLOW_TRACKING_URI")

    def require_prefect(self) -> str:
        return self._required(self.prefect_api_url, "PREFECT_API_URL")

    def _required(self, value: str | None, variable: str) -> str:
        if not value:
            raise SettingsError(f"{variable} is unset and no local stack state in "
                                f"{self.gan_home} (run `gan stack up` or set it)")
        return value

    def public_dict(self) -> dict[str, Any]:
        """Everything safe to print or log: secrets masked, never their values."""
        d = self.model_dump(mode="json")
        for k in ("aws_access_key_id", "aws_secret_access_key", "backup_aws_access_key_id",
                  "backup_aws_secret_access_key", "mlflow_tracking_password",
                  "prefect_api_auth_string"):
            d[k] = "***" if getattr(self, k) else None
        return d

    # ---- internals

    def _state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def _with_stack_state(self) -> Settings:
        state = self._state()
        updates: dict[str, Any] = {}
        if self.s3_endpoint_url is None and state.get("s3_endpoint"):
            updates["s3_endpoint_url"] = state["s3_endpoint"]
        if self.mlflow_tracking_uri is None and state.get("mlflow_uri"):
            updates["mlflow_tracking_uri"] = state["mlflow_uri"]
        if self.prefect_api_url is None and state.get("prefect_api_url"):
            updates["prefect_api_url"] = state["prefect_api_url"]
        updates |= self._stack_secrets(state, updates)
        if self.ray_address is None and state.get("ray_address"):
            updates |= {"ray_address": state["ray_address"], "ray_from_stack": True}
        # The local stack's keys belong to its SeaweedFS, so without GAN_S3_ENDPOINT_URL they win
        # over AWS_* in the environment (which usually belong to some other store); with it,
        # only the environment's keys are used and credentials.json is never sent elsewhere.
        if not self.s3_external and self.credentials_file.exists():
            try:
                creds = json.loads(self.credentials_file.read_text())
                updates["aws_access_key_id"] = SecretStr(creds["access_key_id"])
                updates["aws_secret_access_key"] = SecretStr(creds["secret_access_key"])
            except (KeyError, json.JSONDecodeError) as e:
                raise SettingsError(f"{self.credentials_file} is unreadable: {e}") from None
        return self.model_copy(update=updates) if updates else self

    def _stack_secrets(self, state: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
        """MLflow admin and Prefect auth string from GAN_HOME's files, for the local stack's
        URLs only (the one in stack.json, or 127.0.0.1 on the configured port): an external
        server never gets them, and the environment's values win."""
        out: dict[str, Any] = {}
        mlflow_uri = updates.get("mlflow_tracking_uri", self.mlflow_tracking_uri)
        if (self.mlflow_tracking_username is None and self.mlflow_tracking_password is None
                and mlflow_uri in (state.get("mlflow_uri"),
                                   f"http://127.0.0.1:{self.mlflow_port}")
                and (ident := _read_secret_json(self.mlflow_admin_file))):
            out["mlflow_tracking_username"] = ident["username"]
            out["mlflow_tracking_password"] = SecretStr(ident["password"])
        prefect_url = updates.get("prefect_api_url", self.prefect_api_url)
        if (self.prefect_api_auth_string is None
                and prefect_url in (state.get("prefect_api_url"),
                                    f"http://127.0.0.1:{self.prefect_port}/api")
                and self.prefect_auth_file.is_file()):
            out["prefect_api_auth_string"] = SecretStr(self.prefect_auth_file.read_text().strip())
        return out


def _read_secret_json(path: Path) -> dict[str, str] | None:
    """{"username", "password"} from a stack identity file; None when absent."""
    try:
        data = json.loads(path.read_text())
        return {"username": str(data["username"]), "password": str(data["password"])}
    except FileNotFoundError:
        return None
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise SettingsError(f"{path} is unreadable ({e}); restore it from a backup") from None
