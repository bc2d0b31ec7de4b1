"""Training on a multi-node Ray cluster, on one machine: what a real cluster (KubeRay) does.

The fixture starts a head (`ray start --head`, no CPUs: it schedules, it does not train) and
two worker nodes (`ray start --address`, separate raylets, `--num-cpus=1` each and a custom
resource naming the node), all with token authentication, each its own process tree stopped
in `finally` (never `ray stop`, which would stop every Ray of this user on the machine). The
test points the driver at the head's address (what RAY_ADDRESS does for `gan retrain`) and
trains two workers of one CPU each: they can only fit on different nodes, and the run's
record (`nodes`, by rank) shows which. Ray's cluster mode puts every node on this machine's
own IP (its multi-node path does not run on 127.0.0.1: `ray start --address` refuses when
cluster mode is off), so the nodes listen there for the test's minute; token auth guards
them. Tiny model, in-memory digits, 2 epochs, a local folder as shared storage.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import ray
from pyarrow import fs as pafs

from gan.core.config import DataConfig, resolve_configs
from gan.data.prepare import prepare_arrays
from gan.stack.procs import port_free, terminate_trees
from gan.train.ray.cluster import join, reachable, stop
from gan.train.ray.driver import run
from gan.train.ray.worker import RunSpec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
RAY = str(Path(sys.executable).parent / "ray")
NODES = ("gan_node_a", "gan_node_b")


def _free_port() -> int:
    for port in range(24000, 32000, 7):
        if port_free(port):
            return port
    raise RuntimeError("no free port for the Ray head")


def _start(args: list[str], env: dict[str, str], log: Path) -> psutil.Process:
    with open(log, "ab") as out:
        p = subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *args], env=env,
                             stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return psutil.Process(p.pid)


def _wait(cond, what: str, log: Path, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:]
            raise AssertionError(f"{what} not up after {timeout_s:.0f}s:\n{tail}")
        time.sleep(0.5)


@pytest.fixture
def cluster() -> Iterator[dict]:
    root = Path(tempfile.mkdtemp(prefix="gan-rc-"))  # short: Ray's socket paths fit 107 B
    token = root / "token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
            "RAY_USAGE_STATS_ENABLED": "0"}
    port = _free_port()
    procs: list[psutil.Process] = []
    try:
        log = root / "head.log"
        procs.append(_start(["--head", f"--port={port}", "--num-cpus=0",
                             "--include-dashboard=false", f"--temp-dir={root / 'head'}"],
                            env, log))
        _wait(lambda: "Ray runtime started" in log.read_text(), "the head", log)
        address = next(line.split("address='", 1)[1].split("'", 1)[0]
                       for line in log.read_text().splitlines() if "--address='" in line)
        for name in NODES:
            nlog = root / f"{name}.log"
            procs.append(_start([f"--address={address}", "--num-cpus=1",
                                 f"--resources={json.dumps({name: 1})}",
                                 f"--temp-dir={root / name}"], env, nlog))
        for name in NODES:
            nlog = root / f"{name}.log"
            _wait(lambda nlog=nlog: "Ray runtime started" in nlog.read_text(), name, nlog)
        assert reachable(address)
        yield {"address": address, "token": token, "root": root}
    finally:
        terminate_trees(procs, grace_s=10)
        shutil.rmtree(root, ignore_errors=True)


def test_two_workers_train_on_two_nodes(cluster: dict) -> None:
    data = prepare_arrays(DataConfig(limit=200))
    model_cfg, train_cfg = resolve_configs(
        "smoke", train={"epochs": 2, "num_workers": 2, "cpus_per_worker": 1,
                        "checkpoint_every": 2})
    storage = str(cluster["root"] / "storage")
    spec = RunSpec(run_id="it-multinode", model_cfg=model_cfg, train_cfg=train_cfg,
                   run_dir=f"{storage}/it-multinode", run_fs=pafs.LocalFileSystem(), data=data,
                   echo=False)
    assert not ray.is_initialized()
    outcome = run(spec, storage_root=storage, address=cluster["address"],
                  token_file=cluster["token"])
    assert not ray.is_initialized()  # disconnected; the cluster stays for its owner
    summary = outcome.summary
    assert summary["epochs_completed"] == 2 and summary["world_size"] == 2
    nodes = summary["nodes"]
    assert len(nodes) == 2 and nodes[0] != nodes[1], nodes
    # Which node is which: the custom resource each worker node was started with.
    session = join(cluster["address"], token_file=cluster["token"])
    try:
        by_id = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    finally:
        stop(session)
    placed = sorted(next(r for r in NODES if r in by_id[n]) for n in nodes)
    assert placed == sorted(NODES)
