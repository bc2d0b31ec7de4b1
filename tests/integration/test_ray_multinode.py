"""Training on a multi-node Ray cluster, on one machine: what a real cluster (KubeRay) does.

The fixture starts a head (`ray start --head`: it schedules; its one CPU is a decoy, as it
offers no `gan_worker`) and two worker nodes (`ray start --address`, separate raylets,
`--num-cpus=1` each, a custom resource naming the node and `gan_worker`, the resource every
training worker requests: GAN_RAY_WORKER_RESOURCE), all with token authentication, each its
own process tree stopped in `finally` (never `ray stop`, which would stop every Ray of this
user on the machine). Ray's cluster mode puts every node on this machine's own IP (its
multi-node path does not run on 127.0.0.1: `ray start --address` refuses when cluster mode is
off), so the nodes listen there for the test's minutes; token auth guards them.

1. The driver joins the head's address (what RAY_ADDRESS does for `gan retrain`) and trains
   two workers of one CPU each: they fit only on the two worker nodes, one each, and the
   run's record (`nodes`, by rank) shows which. Tiny model, in-memory digits, local storage.
2. `gan retrain` (a subprocess: RAY_ADDRESS, Ray's own RAY_AUTH_* and GAN_RAY_WORKER_RESOURCE
   in its environment; the session stack's S3, MLflow and Prefect) trains two workers for 12
   epochs; once a checkpoint past epoch 1 is in S3, worker node b is killed (SIGKILL of every
   process of that node at once: its `ray start` tree and whatever names its temp dir), then
   capacity returns (a new node with the same resources). Ray Train restarts the group
   (`train.max_failures`) from the last complete checkpoint; it finishes on node a and the new
   node (never the decoy head), and exactly one version is registered.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import ray
from mlflow import MlflowClient
from pyarrow import fs as pafs

from gan.core.config import DataConfig, resolve_configs
from gan.core.records import TrainedRef
from gan.core.settings import Settings
from gan.data.prepare import prepare_arrays
from gan.io.storage import Storage
from gan.stack.procs import port_free, terminate_trees
from gan.train.ray.cluster import join, reachable, stop
from gan.train.ray.driver import run
from gan.train.ray.worker import TRAINED_FILE, RunSpec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
RAY = str(Path(sys.executable).parent / "ray")
NODES = ("gan_node_a", "gan_node_b")
WORKER = "gan_worker"  # what workers request (GAN_RAY_WORKER_RESOURCE); nodes a, b offer it
RELAXED_GATE = ("--max-class-kl", "100", "--min-recall-ratio", "0")


def _free_port() -> int:
    for port in range(24000, 32000, 7):
        if port_free(port):
            return port
    raise RuntimeError("no free port for the Ray head")


def _wait(cond: Callable[[], bool], what: str, log: Path, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            tail = log.read_text()[-3000:]
            raise AssertionError(f"{what} not up after {timeout_s:.0f}s:\n{tail}")
        time.sleep(0.5)


class Cluster:
    """A head and worker nodes, each a `ray start --block` process tree of this test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.token = root / "token"
        self.token.write_text(secrets.token_hex(32))
        self.token.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env = env | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token),
                          "RAY_USAGE_STATS_ENABLED": "0"}
        self.procs: dict[str, psutil.Process] = {}
        self.address = ""

    def _start(self, tag: str, args: list[str]) -> Path:
        log = self.root / f"{tag}.log"
        with open(log, "ab") as out:
            p = subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats", *args,
                                  f"--temp-dir={self.root / tag}"], env=self.env, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[tag] = psutil.Process(p.pid)
        return log

    def start_head(self) -> None:
        # One CPU but no WORKER: a decoy that training workers must not take (a restarted
        # group waits for a node with WORKER instead).
        log = self._start("head", ["--head", f"--port={_free_port()}", "--num-cpus=1",
                                   "--include-dashboard=false"])
        _wait(lambda: "Ray runtime started" in log.read_text(), "the head", log)
        self.address = next(line.split("address='", 1)[1].split("'", 1)[0]
                            for line in log.read_text().splitlines() if "--address='" in line)

    def start_nodes(self, nodes: dict[str, str]) -> None:
        """{tag: custom resource naming it}: one CPU and one WORKER each; returns once every
        node is up."""
        logs = [self._start(tag, [f"--address={self.address}", "--num-cpus=1",
                                  f"--resources={json.dumps({resource: 1, WORKER: 1})}"])
                for tag, resource in nodes.items()]
        for tag, log in zip(nodes, logs, strict=True):
            _wait(lambda log=log: "Ray runtime started" in log.read_text(), tag, log)

    def kill_node(self, tag: str) -> list[int]:
        """SIGKILL every process of node `tag` at once: its `ray start` tree and any process
        whose command line names the node's temp dir (raylet, agents, workers)."""
        temp = str(self.root / tag)
        root = self.procs.pop(tag)
        victims = {p.pid: p for p in (root, *root.children(recursive=True))}
        for p in psutil.process_iter():
            try:
                if p.pid not in victims and any(a.endswith(temp) or f"{temp}/" in a
                                                for a in p.cmdline()):
                    victims[p.pid] = p
            except psutil.Error:
                continue
        for p in victims.values():
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        psutil.wait_procs(list(victims.values()), timeout=10)
        return sorted(victims)

    def node_resources(self) -> dict[str, dict]:
        """{node id: {"alive": bool, "resources": {...}}} of every node the head knows."""
        session = join(self.address, token_file=self.token)
        try:
            return {n["NodeID"]: {"alive": n["Alive"], "resources": n["Resources"]}
                    for n in ray.nodes()}
        finally:
            stop(session)

    def close(self) -> None:
        terminate_trees(list(self.procs.values()), grace_s=10)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="gan-rc-"))  # short: Ray's socket paths fit 107 B
    c = Cluster(root)
    try:
        c.start_head()
        c.start_nodes({"a": NODES[0], "b": NODES[1]})
        assert reachable(c.address)
        yield c
    finally:
        c.close()
        shutil.rmtree(root, ignore_errors=True)


def _which(nodes: list[str], known: dict[str, dict]) -> list[str]:
    """The custom resource (gan_node_a / gan_node_b) of each node id; "other" for the head."""
    return [next((r for r in NODES if r in known[n]["resources"]), "other") for n in nodes]


def test_two_workers_train_on_two_nodes(cluster: Cluster) -> None:
    data = prepare_arrays(DataConfig(limit=200))
    model_cfg, train_cfg = resolve_configs(
        "smoke", train={"epochs": 2, "num_workers": 2, "cpus_per_worker": 1,
                        "checkpoint_every": 2})
    storage = str(cluster.root / "storage")
    spec = RunSpec(run_id="it-multinode", model_cfg=model_cfg, train_cfg=train_cfg,
                   run_dir=f"{storage}/it-multinode", run_fs=pafs.LocalFileSystem(), data=data,
                   echo=False)
    assert not ray.is_initialized()
    outcome = run(spec, storage_root=storage, address=cluster.address,
                  token_file=cluster.token, worker_resource=WORKER)
    assert not ray.is_initialized()  # disconnected; the cluster stays for its owner
    summary = outcome.summary
    assert summary["epochs_completed"] == 2 and summary["world_size"] == 2
    nodes = summary["nodes"]
    assert len(nodes) == 2 and nodes[0] != nodes[1], nodes
    # Which node is which: the custom resource each worker node was started with.
    assert sorted(_which(nodes, cluster.node_resources())) == sorted(NODES)


def _checkpoint_epochs(storage: Storage, prefix: str) -> list[int]:
    return sorted(int(m[1]) for k in storage.list_keys(prefix)
                  if (m := re.search(r"checkpoint_epoch_(\d+)/checkpoint\.pt$", k)))


def _settled_checkpoint_epochs(storage: Storage, prefix: str, quiet_s: float = 3.0,
                               cap_s: float = 30.0) -> list[int]:
    """`_checkpoint_epochs` once it has not changed for `quiet_s` (at most `cap_s`)."""
    last, since, deadline = _checkpoint_epochs(storage, prefix), time.monotonic(), \
        time.monotonic() + cap_s
    while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
        time.sleep(0.2)
        now = _checkpoint_epochs(storage, prefix)
        if now != last:
            last, since = now, time.monotonic()
    return last


def test_a_killed_worker_node_resumes_on_a_new_node_and_registers_once(
        cluster: Cluster, stack: Settings, storage: Storage, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    run_id, model, epochs = f"it-nodekill-{tag}", f"gan-nodekill-{tag}", 12
    env = dict(os.environ) | {"RAY_ADDRESS": cluster.address, "RAY_AUTH_MODE": "token",
                              "RAY_AUTH_TOKEN_PATH": str(cluster.token),
                              "GAN_RAY_WORKER_RESOURCE": WORKER,
                              # Ray Train's controller polls the workers every 0.5 s, not 2 s
                              # (what a local Ray gets, gan.train.ray.cluster.local_env_vars):
                              # each epoch's report, and the dead worker, are seen sooner.
                              "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
    env.pop("RAY_AUTH_TOKEN", None)
    log = tmp_path / "retrain.log"
    t0 = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gan.cli", "retrain", "--smoke", "--workers", "2",
             "--epochs", str(epochs), "--run-id", run_id, "--model-name", model, *RELAXED_GATE],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        # Mid-run: once a checkpoint past epoch 1 is in S3, node b dies with its worker.
        prefix = stack.s3_uri("ray", run_id) + "/"
        deadline = time.monotonic() + 150
        while not [e for e in _checkpoint_epochs(storage, prefix) if e >= 2]:
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.2)
        killed = cluster.kill_node("b")
        t_kill = time.monotonic() - t0
        assert killed
        # What the old group left: killing takes a moment (it scans every process), in which
        # the next epoch can finish and rank 0 (on node a) can still be uploading it. With b
        # dead no further epoch completes, so the listing settles; the restart can only start
        # once b2 is up, below.
        seen = _settled_checkpoint_epochs(storage, prefix)
        assert max(seen) < epochs, f"the run had finished before the kill: {seen}"
        # Capacity returns: a new worker node with the same custom resource.
        cluster.start_nodes({"b2": NODES[1]})
        rc = proc.wait(timeout=200)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = log.read_text()
    print(f"kill at {t_kill:.0f} s (checkpoints {seen}); run done at "
          f"{time.monotonic() - t0:.0f} s")
    assert rc == 0, out[-4000:]

    trained = TrainedRef.model_validate_json(
        storage.get_bytes(stack.s3_uri("ray", run_id, TRAINED_FILE)))
    assert trained.epochs_completed == epochs and not trained.stopped_by_time_limit
    # The restarted group started from Ray's latest checkpoint before the kill, not epoch 0.
    assert 0 < trained.resumed_from_epoch <= max(seen), (trained.resumed_from_epoch, seen,
                                                         out[-3000:])
    assert [h["epoch"] for h in trained.history] == list(range(1, epochs + 1))
    # It finished on node a and the new node b (the killed one is dead, not among them).
    known = cluster.node_resources()
    assert len(trained.ray_nodes) == 2
    assert all(known[n]["alive"] for n in trained.ray_nodes), known
    assert sorted(_which(trained.ray_nodes, known)) == sorted(NODES)
    dead = [n for n, k in known.items() if not k["alive"]]
    assert len(dead) == 1 and dead[0] not in trained.ray_nodes, known
    # Exactly one registered version for the run, from the final checkpoint.
    c = MlflowClient(tracking_uri=stack.require_mlflow())
    versions = c.search_model_versions(f"name = '{model}'")
    assert len(versions) == 1, [v.version for v in versions]
    assert versions[0].tags["gan.checkpoint_uri"] == trained.checkpoint_uri
