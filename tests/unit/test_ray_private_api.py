"""Every Ray internal that `gan.train.ray` relies on (`# RAY private` in cluster.py) still exists.

pyproject pins Ray to the 2.60 line because of these; a Ray upgrade that moves or renames one
fails here, naming it, instead of in the middle of a training run.
"""

from __future__ import annotations

import importlib
import inspect

import pytest

# (module, dotted attribute) of each private name the code imports, subclasses or patches.
PRIVATE_NAMES = [
    ("ray._private.ray_constants", "ENABLE_RAY_CLUSTER"),  # patched by _loopback_node_ip
    # token authentication switched on for a join (_use_token / _refresh_auth)
    ("ray._private.authentication.authentication_token_setup", "_enable_token_auth"),
    ("ray._raylet", "AuthenticationTokenLoader.instance"),
    ("ray._raylet", "AuthenticationTokenLoader.reset_cache"),
    ("ray._raylet", "Config.initialize"),
    ("ray.train.torch.config", "_TorchBackend"),  # subclassed: _FileStoreTorchBackend
    ("ray.train.torch.config", "_TorchBackend.on_start"),
    ("ray.train.torch.config", "_TorchBackend.on_shutdown"),
    ("ray.train.torch.config", "_set_torch_distributed_env_vars"),
    ("ray.train.torch.config", "_setup_torch_process_group"),
    ("ray.train.torch.config", "TorchConfig.backend_cls"),  # overridden: _FileStoreTorchConfig
    ("ray.train.v2._internal.callbacks.datasets", "DatasetsCallback"),
    ("ray.train.v2._internal.callbacks.placement_group_callback",
     "PlacementGroupCleanerCallback"),
    ("ray.train.torch", "TorchTrainer._create_default_callbacks"),  # overridden
    # what _FileStoreTorchBackend.on_start calls on the worker group it is handed
    ("ray.train.v2._internal.execution.worker_group", "WorkerGroup.execute"),
    ("ray.train.v2._internal.execution.worker_group", "WorkerGroup.execute_single_async"),
    ("ray.train.v2._internal.execution.worker_group", "WorkerGroup.get_resources_per_worker"),
    ("ray.train.v2._internal.execution.worker_group", "WorkerGroup.__len__"),
]


@pytest.mark.parametrize(("module", "name"), PRIVATE_NAMES, ids=[f"{m}:{n}" for m, n in
                                                                  PRIVATE_NAMES])
def test_private_name_resolves(module: str, name: str) -> None:
    obj = importlib.import_module(module)
    for part in name.split("."):
        assert hasattr(obj, part), f"Ray {module}.{name} is gone: see gan/train/ray/cluster.py"
        obj = getattr(obj, part)


def test_process_group_setup_takes_the_arguments_we_pass() -> None:
    from ray.train.torch.config import _setup_torch_process_group

    params = inspect.signature(_setup_torch_process_group).parameters
    assert {"backend", "world_rank", "world_size", "init_method", "timeout_s"} <= set(params)


def test_cluster_switch_is_a_module_constant() -> None:
    """_loopback_node_ip flips it for the local node's start; it must be a plain bool."""
    from ray._private import ray_constants

    assert isinstance(ray_constants.ENABLE_RAY_CLUSTER, bool)


def test_the_pinned_line_is_installed() -> None:
    import ray

    assert ray.__version__.startswith("2.60."), (
        f"Ray {ray.__version__}: gan/train/ray/cluster.py is written against 2.60's internals; "
        "check every `# RAY private` use, then move the pin in pyproject.toml")


def test_cluster_module_imports() -> None:
    """The module that subclasses the internals imports (class bodies resolve their bases)."""
    from gan.train.ray import cluster

    assert issubclass(cluster._FileStoreTorchBackend, importlib.import_module(
        "ray.train.torch.config")._TorchBackend)
