"""The Ray instance a training run uses: start a local one on loopback, or join RAY_ADDRESS.

What this module is: `ray_session(address, num_cpus=, num_gpus=, token_file=, fallback_local=)`,
a context manager that
  * reuses a Ray already initialised in this process (tests, `gan bench`) and leaves it running;
  * else joins `address` (settings.ray_address: RAY_ADDRESS, e.g. `ray://head:10001` or `auto`,
    or the warm Ray head `gan stack up` runs on 127.0.0.1:GAN_RAY_PORT) when given, with the
    head's token file (token authentication) when there is one, and disconnects afterwards;
    a loopback head is joined on loopback and counts as local (same actor env as below);
  * else (or when `fallback_local` and the stack's head does not answer) starts a local
    single-node Ray with exactly the CPUs/GPUs the run needs, no dashboard, every server bound
    to 127.0.0.1, session files in a private temp dir, and shuts it down afterwards (a local
    start costs ~10-15 s on a 2-core machine: what the stack's warm head saves each run).
    Every actor of such a local Ray gets `local_env_vars()` (gloo on loopback, no preemption
    watcher, a 0.5 s controller poll).
Plus `torch_config`: the torch process-group set-up for a local session, rendezvous through a
file instead of a TCP store listening on every interface, and `trainer_class`: a
TorchTrainer without the callbacks a local Ray does not need.

What it is not: no training (see `gan.train.ray.driver`, `gan.train.ray.worker`). Every Ray call
in this file is marked `# RAY`; the uses of Ray internals are marked `# RAY private` and explained.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray  # RAY
from ray._private.authentication import authentication_token_setup  # RAY private: _refresh_auth
from ray._raylet import AuthenticationTokenLoader  # RAY private: see _refresh_auth
from ray._raylet import Config as RayConfig  # RAY private: see _refresh_auth
from ray.train.torch import TorchConfig, TorchTrainer  # RAY
from ray.train.torch.config import _TorchBackend  # RAY private: see _FileStoreTorchBackend
from ray.train.v2._internal.callbacks.datasets import DatasetsCallback  # RAY private
from ray.train.v2._internal.callbacks.placement_group_callback import (  # RAY private
    PlacementGroupCleanerCallback,
)

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class RaySession:
    """How this process is attached to Ray for one run."""

    owned: bool  # started or joined here: shut down / disconnected when the run ends
    local: bool  # a single-node Ray on this machine (bound to loopback when started here)
    init_s: float  # seconds ray.init took (0 when reused)
    temp_dir: str | None = None  # the private session dir of a local Ray started here
    # Environment variables set for a token-authenticated join, with their values before.
    env_before: dict[str, str | None] = field(default_factory=dict)


@contextlib.contextmanager
def ray_session(address: str | None, *, num_cpus: int, num_gpus: int = 0,
                token_file: Path | None = None, fallback_local: bool = False
                ) -> Iterator[RaySession]:
    """Ray for one run (see the module docstring); checks the CPUs/GPUs the run needs.

    `token_file`: the head's token (used when the file exists). `fallback_local`: `address` is
    the stack's head, so when nothing answers there start a local Ray instead of failing."""
    if ray.is_initialized():  # RAY
        session = RaySession(owned=False, local=_is_local(), init_s=0.0)
    elif address and fallback_local and not reachable(address):
        log.info("the stack's Ray head at %s does not answer (is `gan stack up` running?): "
                 "starting a local Ray for this run", address)
        session = start_local(num_cpus=num_cpus, num_gpus=num_gpus)
    elif address:
        session = join(address, token_file=token_file)
    else:
        session = start_local(num_cpus=num_cpus, num_gpus=num_gpus)
    try:
        check_resources(session, num_cpus=num_cpus, num_gpus=num_gpus)
        yield session
    finally:
        if session.owned:
            stop(session)


def start_local(*, num_cpus: int, num_gpus: int = 0) -> RaySession:
    """A local Ray with `num_cpus` CPUs (and GPUs), all its servers on 127.0.0.1."""
    temp_dir = tempfile.mkdtemp(prefix="gan-ray-")  # short: Ray's socket paths must fit 107 B
    t0 = time.perf_counter()
    try:
        with _loopback_node_ip():
            ray.init(  # RAY
                address="local",  # never join a cluster that RAY_ADDRESS happens to name
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                include_dashboard=False,
                _node_ip_address=LOOPBACK,
                _temp_dir=temp_dir,
                # Ray starts workers at nice 15; the training workers ARE the job here, and at
                # 15 they lose every CPU contest against nice-0 processes (measured 4-8× slower
                # than the in-process loop on a shared 2-core machine).
                _system_config={"worker_niceness": 0},
                log_to_driver=True,  # the workers' progress lines reach this terminal
                runtime_env={"env_vars": local_env_vars()},
            )
    except Exception:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    init_s = time.perf_counter() - t0
    log.info("started a local Ray (%d CPU, %d GPU) on %s in %.1f s", num_cpus, num_gpus,
             LOOPBACK, init_s)
    return RaySession(owned=True, local=True, init_s=init_s, temp_dir=temp_dir)


def local_env_vars() -> dict[str, str]:
    """Environment of every actor of a local Ray started here (Ray merges these into the
    env_vars Ray Train gives its controller and workers):
      * gloo's sockets on loopback;
      * no preemption watcher: one machine has no autoscaler draining its node, and the
        watcher is one more Python process to start on a small machine;
      * the controller polls its workers every 0.5 s instead of 2 s: a run's end and a dead
        worker are noticed sooner (each poll is one tiny actor call per worker).
    """
    return {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
            **loopback_env_vars()}


def loopback_env_vars() -> dict[str, str]:
    """gloo's sockets on loopback (Linux names the interface `lo`; elsewhere gloo's default)."""
    return {"GLOO_SOCKET_IFNAME": "lo"} if sys.platform.startswith("linux") else {}


def join(address: str, *, token_file: Path | None = None) -> RaySession:
    """Connect to an existing cluster (`ray://host:10001`, `host:6379` or `auto`).

    A head on loopback (the stack's) is joined on loopback, and its actors get
    `local_env_vars()`; with `token_file` present, token authentication is switched on for
    this process first (the head refuses a driver without its token)."""
    env_before = _use_token(token_file) if token_file and token_file.exists() else {}
    loopback = _host(address) in (LOOPBACK, "localhost")
    t0 = time.perf_counter()
    try:
        with _loopback_node_ip() if loopback else contextlib.nullcontext():
            ray.init(  # RAY
                address=address, log_to_driver=True,
                runtime_env={"env_vars": local_env_vars()} if loopback else None)
    except Exception:
        _restore_env(env_before)
        raise
    init_s = time.perf_counter() - t0
    local = loopback and _is_local()
    log.info("joined the Ray %s at %s in %.2f s", "head" if local else "cluster", address,
             init_s)
    return RaySession(owned=True, local=local, init_s=init_s, env_before=env_before)


def reachable(address: str, timeout_s: float = 1.0) -> bool:
    """Whether something accepts TCP connections at `host:port` (the head's GCS)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host or LOOPBACK, int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def stop(session: RaySession) -> None:
    """Shut down (local) or disconnect (cluster); remove a local session's files."""
    ray.shutdown()  # RAY
    if session.temp_dir:
        shutil.rmtree(session.temp_dir, ignore_errors=True)
    _restore_env(session.env_before)


# Ray reads its authentication mode when imported, and caches the token it loaded: switching
# this process to a head's token needs both refreshed (what `ray.init` itself does when it
# enables token auth for a new local cluster: `_enable_token_auth`).
_TOKEN_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")


def _use_token(token_file: Path) -> dict[str, str | None]:
    """Token authentication with `token_file` for this process; returns the env before."""
    before = {k: os.environ.get(k) for k in _TOKEN_ENV}
    os.environ.pop("RAY_AUTH_TOKEN", None)  # it would win over the file
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_file)
    _refresh_auth("token")
    return before


def _restore_env(before: dict[str, str | None]) -> None:
    if not before:
        return
    for k, v in before.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    _refresh_auth(os.environ.get("RAY_AUTH_MODE"))


def _refresh_auth(mode: str | None) -> None:
    """Make Ray re-read RAY_AUTH_MODE and the token (see `_TOKEN_ENV`'s comment)."""
    if mode == "token":
        authentication_token_setup._enable_token_auth()  # RAY private: sets the mode, re-reads
    else:
        RayConfig.initialize("")  # RAY private: re-reads RAY_AUTH_MODE from the environment
    AuthenticationTokenLoader.instance().reset_cache()  # RAY private


def _host(address: str) -> str:
    return address.removeprefix("ray://").rpartition(":")[0]


def check_resources(session: RaySession, *, num_cpus: int, num_gpus: int) -> None:
    """Fail fast when a local Ray cannot ever fit the run: Ray Train would otherwise retry
    the worker-group start forever. A cluster may be autoscaling: there, only warn."""
    total = ray.cluster_resources()  # RAY
    short = [f"{name} {have:g} < {need}" for name, need, have in (
        ("CPU", num_cpus, total.get("CPU", 0.0)), ("GPU", num_gpus, total.get("GPU", 0.0)))
        if need > have]
    if not short:
        return
    msg = (f"the Ray cluster lacks resources for this run ({', '.join(short)}; the run needs "
           "train.num_workers × train.cpus_per_worker CPUs and one GPU per worker with "
           "train.use_gpu)")
    if session.local:
        raise RuntimeError(msg)
    log.warning("%s: waiting for the cluster to scale up", msg)


def _is_local() -> bool:
    """True when the Ray this process is attached to is one node on this machine's loopback."""
    try:
        host = ray.get_runtime_context().gcs_address.rsplit(":", 1)[0]  # RAY
    except Exception:  # Ray Client sessions have no gcs_address
        return False
    return host in (LOOPBACK, "localhost", "::1") and len(ray.nodes()) == 1  # RAY


@contextlib.contextmanager
def _loopback_node_ip() -> Iterator[None]:
    """Let `_node_ip_address="127.0.0.1"` mean loopback while the local node starts.

    Ray (2.5x/2.60) resolves 127.0.0.1 to the machine's outward IP
    (`ray._private.services.resolve_ip_for_localhost`) unless its cluster mode is off — the
    switch Ray itself turns off on macOS/Windows (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER, read once
    at import, so setting the variable now would be too late). With the node IP 127.0.0.1 the
    GCS, raylet, object manager, agents and every worker's gRPC server bind 127.0.0.1 instead
    of all interfaces. No public ray.init argument does this in 2.60.
    """
    from ray._private import ray_constants  # RAY private; lazy: looked up only when used

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


# --------------------------------------------------------------------------- torch set-up


@dataclass
class _FileStoreTorchConfig(TorchConfig):  # RAY
    """TorchConfig whose process group meets through a file (single node only)."""

    @property
    def backend_cls(self) -> type:
        return _FileStoreTorchBackend


class _FileStoreTorchBackend(_TorchBackend):  # RAY private
    """Ray's torch backend, with the rendezvous through a `FileStore` in the temp dir.

    Why: Ray's default (`MASTER_ADDR`/`MASTER_PORT`, env://) makes rank 0 host a TCPStore,
    which PyTorch binds to every interface whatever MASTER_ADDR says, for the whole run. On
    one machine a file does the same job and opens no port. Everything else (env vars, device
    set-up, shutdown) is Ray's `_TorchBackend`; only the rendezvous URL differs.
    """

    def on_start(self, worker_group: Any, backend_config: TorchConfig) -> None:
        from ray.train.torch.config import (  # RAY private; lazy: looked up only when used
            _set_torch_distributed_env_vars,
            _setup_torch_process_group,
        )

        backend = backend_config.backend or (
            "nccl" if worker_group.get_resources_per_worker().get("GPU", 0) > 0 else "gloo")
        # A fresh file per worker-group start: a FileStore file must not be reused.
        self._store_file = os.path.join(tempfile.gettempdir(), f"gan-pg-{uuid.uuid4().hex}")
        worker_group.execute(_set_torch_distributed_env_vars)
        ray.get([  # RAY
            worker_group.execute_single_async(
                rank, _setup_torch_process_group, backend=backend, world_rank=rank,
                world_size=len(worker_group), init_method=f"file://{self._store_file}",
                timeout_s=backend_config.timeout_s)
            for rank in range(len(worker_group))
        ])

    def on_shutdown(self, worker_group: Any, backend_config: TorchConfig) -> None:
        try:
            super().on_shutdown(worker_group, backend_config)
        finally:
            store = getattr(self, "_store_file", None)
            if store:
                with contextlib.suppress(OSError):
                    os.remove(store)


def torch_config(session: RaySession) -> TorchConfig:
    """Ray's TorchConfig for a cluster; the file-rendezvous one for a local session."""
    return _FileStoreTorchConfig() if session.local else TorchConfig()  # RAY


class _LocalTorchTrainer(TorchTrainer):  # RAY
    """TorchTrainer without the placement-group cleaner (and, without Ray Datasets, without
    the datasets callback), for a local Ray.

    Why: Ray Train V2 starts a detached `PlacementGroupCleaner` that asks the State API
    (served by the dashboard) every second whether the controller still lives. Our local Ray
    has no dashboard (none installed: `ray[train]`, not `ray[default]`), so it logs "Failed to
    query Ray Train Controller actor state" once a second for the whole run, drowning the
    progress lines. Its job — freeing placement groups after a controller crash — is done by
    `ray.shutdown()` when our local session ends.
    """

    def _create_default_callbacks(self) -> list[Any]:  # RAY private override
        # Without Ray Datasets, DatasetsCallback would still start a DatasetManager actor (one
        # more Python process per worker-group start) that nothing asks for a shard.
        drop = (PlacementGroupCleanerCallback,) if self.datasets else (
            PlacementGroupCleanerCallback, DatasetsCallback)
        return [cb for cb in super()._create_default_callbacks() if not isinstance(cb, drop)]


def trainer_class(session: RaySession) -> type[TorchTrainer]:
    """The TorchTrainer to use in this session (see `_LocalTorchTrainer`)."""
    return _LocalTorchTrainer if session.local else TorchTrainer
