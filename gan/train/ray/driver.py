"""Train with Ray Train: `train(settings, dataset, model_cfg, train_cfg, run_id=...)` → TrainedRef.

What this module is: the driver side of distributed training. `train` checks the request,
looks at what the run id already holds in storage (finished → its result, diverged → the
same error, stopped → continue), then `run` starts or joins Ray (`gan.train.ray.cluster`) and fits
a `TorchTrainer`:
  ScalingConfig(num_workers, use_gpu, resources_per_worker={"CPU": cpus_per_worker[, "GPU": 1]
                [, GAN_RAY_WORKER_RESOURCE: 1 on a cluster]})
  RunConfig(name=run_id, storage_path=<bucket>/ray, storage_filesystem=<pyarrow S3>,
            FailureConfig(max_failures), CheckpointConfig(num_to_keep=2))
Data: each worker loads the dataset version whole, or — when `train.stream` says so
(`gan.train.stream.choose_data_path`: "always", or "auto" above `train.max_in_memory_mb`) —
streams its train shards from a Ray Dataset passed as `datasets={"train": ...}`
(`gan.train.ray.stream`; one more CPU is asked of Ray for Ray Data's read tasks).
Resume: a worker that dies makes Ray restart the group from the latest checkpoint
(`ray.train.get_checkpoint()` in the worker); rerunning a stopped run id with the same
RunConfig(name, storage_path) makes Ray V2 reload the run's checkpoint-manager snapshot from
storage, so the workers get that run's latest checkpoint. At every start of the group the
workers also look in storage for the run's latest complete checkpoint and take the newer of
the two (Ray registers a checkpoint only at its next poll of the workers: a node lost in
between would otherwise cost that checkpoint). Live progress: rank 0 prints one
line per epoch (Ray forwards it to this terminal) and, with `on_epoch`, puts its metrics on a
Ray queue that this process drains while `fit()` runs in a thread.

What it is not: no GAN math, nothing that runs in the workers (`gan.train.ray.worker`), no Ray
start-up details (`gan.train.ray.cluster`). Every Ray call is marked `# RAY`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray  # RAY
from ray.train import (  # RAY
    CheckpointConfig,
    FailureConfig,
    LoggingConfig,
    RunConfig,
    ScalingConfig,
    TrainingFailedError,
)
from ray.train.torch import TorchTrainer  # RAY
from ray.util.queue import Empty, Queue  # RAY
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # RAY

from gan.core.config import ModelConfig, TrainConfig
from gan.core.ids import is_run_id
from gan.core.records import DatasetRef, TrainedRef
from gan.core.settings import Settings
from gan.io.jsonio import read_json_fs, write_json_fs
from gan.io.storage import arrow_fs, arrow_path
from gan.train.checkpoint import check_resumable
from gan.train.ddp import FaultSpec, per_worker_batch
from gan.train.ray.cluster import loopback_env_vars, ray_session, torch_config, trainer_class
from gan.train.ray.stream import DATASET_KEY, train_dataset
from gan.train.ray.worker import (
    CHECKPOINT_FILE,
    DIVERGED_FILE,
    RUN_FILE,
    TRAINED_FILE,
    RunSpec,
    train_loop_per_worker,
)
from gan.train.stream import choose_data_path, in_memory_mb

log = logging.getLogger(__name__)
CHECKPOINTS_TO_KEEP = 2  # the latest, and the one before in case the latest is half-written
STREAM_READ_CPUS = 1  # CPUs asked of Ray beyond the workers' when Ray Data reads the shards
OnEpoch = Callable[[dict[str, Any]], None]


class TrainingDiverged(RuntimeError):
    """Training diverged (non-finite loss or saturated D): nothing should be registered."""

    def __init__(self, run_id: str, step: int, reason: str) -> None:
        super().__init__(f"training run {run_id} diverged at step {step}: {reason}")
        self.run_id, self.step, self.reason = run_id, step, reason


class TrainingFailed(RuntimeError):
    """Ray Train gave up (worker errors beyond train.max_failures, or a controller error)."""


@dataclass(frozen=True)
class Outcome:
    """What one `fit()` produced, for `train`, `gan bench` and `gan.tools.gpu_check`."""

    summary: dict[str, Any]  # rank 0's return (gan.train.ray.worker.train_loop_per_worker)
    checkpoint_path: str | None  # filesystem path of the latest checkpoint folder
    ray_init_s: float  # starting or joining Ray (0 when reused)
    startup_s: float  # fit() called → first epoch started (worker group, process group, data)
    fit_s: float  # the whole fit()


def train(settings: Settings, dataset: DatasetRef, model_cfg: ModelConfig,
          train_cfg: TrainConfig, *, run_id: str, on_epoch: OnEpoch | None = None,
          fault: Mapping[str, Any] | None = None) -> TrainedRef:
    """Train (or resume, or return the finished result of) run `run_id` with Ray Train.

    `on_epoch(metrics)` is called in this process once per epoch with rank 0's metrics
    (epoch, step, loss_d, loss_g, d_real, d_fake, images_per_s, samples, ...), and on every
    `preview_every(epochs)`-th epoch and the last "preview": 64 seeded samples (numpy). With
    `on_epoch`, showing progress is the caller's: rank 0 no longer prints its epoch line
    (without it, rank 0 prints one line per epoch, which Ray forwards to the terminal).
    `fault` is a test-only hook (see `gan.train.ddp.FaultSpec`); never set it in production.
    Raises TrainingDiverged (step, reason), TrainingFailed, ValueError for a bad request.
    """
    _check_request(dataset, model_cfg, train_cfg, run_id)
    fs = arrow_fs(settings)
    storage_root = arrow_path(settings.s3_uri("ray"))  # "<bucket>/ray"
    run_dir = f"{storage_root}/{run_id}"
    previous = _previous_result(fs, run_dir, run_id, dataset, model_cfg, train_cfg)
    if previous is not None:
        log.info("run %s already finished %d epochs: returning its result (%s)", run_id,
                 previous.epochs_completed, previous.checkpoint_uri)
        return previous
    write_json_fs(fs, f"{run_dir}/{RUN_FILE}", {
        "run_id": run_id, "model_cfg": model_cfg.model_dump(mode="json"),
        "train_cfg": train_cfg.model_dump(mode="json"),
        "dataset_version": dataset.version, "dataset_uri": dataset.uri})
    deadline = time.time() + train_cfg.time_limit_s if train_cfg.time_limit_s else None
    data_path = choose_data_path(
        train_cfg.stream, train_cfg.max_in_memory_mb, n_images=dataset.n_train + dataset.n_holdout,
        channels=dataset.channels, image_size=dataset.image_size)
    log.info("run %s: dataset %s@%s %s (%.0f MiB as float32; train.stream=%s, "
             "max_in_memory_mb=%d)", run_id, dataset.name, dataset.version,
             "streamed from its shards" if data_path == "stream" else "loaded whole",
             in_memory_mb(dataset.n_train + dataset.n_holdout, dataset.channels,
                          dataset.image_size), train_cfg.stream, train_cfg.max_in_memory_mb)
    spec = RunSpec(run_id=run_id, model_cfg=model_cfg, train_cfg=train_cfg, run_dir=run_dir,
                   run_fs=fs, settings=settings, dataset=dataset, deadline=deadline,
                   fault=FaultSpec.parse(fault),
                   preview_every=preview_every(train_cfg.epochs) if on_epoch else 0,
                   data_path=data_path)
    outcome = run(spec, storage_root=storage_root, address=settings.ray_address,
                  on_epoch=on_epoch, token_file=stack_token_file(settings),
                  fallback_local=settings.ray_from_stack,
                  worker_resource=settings.ray_worker_resource)
    if outcome.checkpoint_path is None:
        raise TrainingFailed(f"training run {run_id} ended without a checkpoint")
    ref = _trained_ref(outcome, spec, dataset, ray_storage_uri=settings.s3_uri("ray"),
                       checkpoint_uri=f"s3://{outcome.checkpoint_path}/{CHECKPOINT_FILE}")
    # Python's json keeps NaN (e.g. loss_g of an epoch without a G step) readable.
    write_json_fs(fs, f"{run_dir}/{TRAINED_FILE}", ref.model_dump(mode="python"))
    return ref


def stack_token_file(settings: Settings) -> Path | None:
    """The stack's Ray token, for joining the stack's own head (its address from the stack's
    state, or RAY_ADDRESS naming 127.0.0.1:GAN_RAY_PORT); None for any other cluster.

    A RAY_ADDRESS cluster (KubeRay, the multi-node test's) authenticates the way Ray itself
    reads it: RAY_AUTH_MODE=token with RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH in this process's
    environment. The stack's token there would replace that one and be refused."""
    own = {f"{host}:{settings.ray_port}" for host in ("127.0.0.1", "localhost")}
    if settings.ray_from_stack or settings.ray_address in own:
        return settings.ray_token_file
    return None


def has_started(settings: Settings, run_id: str) -> bool:
    """Whether run id `run_id` has trained before (its `run.json` is in storage): a rerun of
    it continues or returns that run, it is not a new run."""
    run_dir = f"{arrow_path(settings.s3_uri('ray'))}/{run_id}"
    return read_json_fs(arrow_fs(settings), f"{run_dir}/{RUN_FILE}") is not None


def preview_every(epochs: int) -> int:
    """Epochs between live sample previews: about five per run."""
    return max(1, epochs // 5)


def _check_request(dataset: DatasetRef, model_cfg: ModelConfig, train_cfg: TrainConfig,
                   run_id: str) -> None:
    if not is_run_id(run_id):
        raise ValueError(f"run id {run_id!r} is not accepted: 1-64 letters, digits, '_' or '-', "
                         "starting with a letter or digit")
    per_worker_batch(train_cfg.batch_size, train_cfg.num_workers)
    want = (model_cfg.channels, model_cfg.image_size)
    if (dataset.channels, dataset.image_size) != want:
        raise ValueError(f"dataset {dataset.name}@{dataset.version} has {dataset.channels}×"
                         f"{dataset.image_size}² images but the model expects {want[0]}×"
                         f"{want[1]}² (model.channels, model.image_size)")
    if model_cfg.conditional and dataset.num_classes > model_cfg.num_classes:
        raise ValueError(f"dataset {dataset.name} has {dataset.num_classes} classes but "
                         f"model.num_classes is {model_cfg.num_classes}")


def _previous_result(fs: Any, run_dir: str, run_id: str, dataset: DatasetRef,
                     model_cfg: ModelConfig, train_cfg: TrainConfig) -> TrainedRef | None:
    """The finished result of this run id, or None to (re)start it; raises for a run id that
    diverged or was started with another model or dataset, and ResumeRefused for one started
    with other training settings than epochs, time limit and workers (naming the fields)."""
    diverged = read_json_fs(fs, f"{run_dir}/{DIVERGED_FILE}")
    if diverged is not None:
        raise TrainingDiverged(run_id, int(diverged["step"]),
                               f"{diverged['reason']} (an earlier attempt of this run id; "
                               "start a new run id to train again)")
    started = read_json_fs(fs, f"{run_dir}/{RUN_FILE}")
    if started is not None:
        model = model_cfg.model_dump(mode="json")
        diff = sorted(k for k in model if started["model_cfg"].get(k) != model[k])
        if diff or started["dataset_version"] != dataset.version:
            what = (f"model fields {diff}" if diff else
                    f"dataset version {started['dataset_version']} (now {dataset.version})")
            raise ValueError(f"run id {run_id} was started with other {what}: its "
                             "checkpoints cannot continue this request; use a new run id")
        # Runs started before run.json held train_cfg are not checked (nothing to compare).
        check_resumable(started.get("train_cfg") or {}, train_cfg, run_id=run_id)
    trained = read_json_fs(fs, f"{run_dir}/{TRAINED_FILE}")
    if trained is None:
        return None
    ref = TrainedRef.model_validate(trained)
    done = ref.epochs_completed >= train_cfg.epochs and not ref.stopped_by_time_limit
    return ref if done else None


def _trained_ref(outcome: Outcome, spec: RunSpec, dataset: DatasetRef, *,
                 ray_storage_uri: str, checkpoint_uri: str) -> TrainedRef:
    s = outcome.summary
    history = [dict(h) for h in s["history"]]
    steady = [h["images_per_s"] for h in history[1:]] or [h["images_per_s"] for h in history]
    return TrainedRef(
        run_id=spec.run_id, checkpoint_uri=checkpoint_uri, dataset_version=dataset.version,
        model_cfg=spec.model_cfg.model_dump(mode="json"),
        train_cfg=spec.train_cfg.model_dump(mode="json"),
        epochs_completed=int(s["epochs_completed"]), global_step=int(s["global_step"]),
        history=history, resumed_from_epoch=int(s["resumed_from_epoch"]),
        images_per_s=sum(steady) / len(steady) if steady else 0.0,
        stopped_by_time_limit=bool(s["stopped_by_time_limit"]),
        ray_run_name=spec.run_id, ray_storage_uri=ray_storage_uri,
        ray_nodes=[str(n) for n in s.get("nodes", [])],
        data_path=str(s.get("data_path", "memory")),
    )


# --------------------------------------------------------------------------- fit


def run(spec: RunSpec, *, storage_root: str, address: str | None = None,
        on_epoch: OnEpoch | None = None, token_file: Path | None = None,
        fallback_local: bool = False, worker_resource: str | None = None) -> Outcome:
    """Fit one TorchTrainer for `spec` in Ray (reused, joined, or started locally; `address`,
    `token_file` and `fallback_local` go to `ray_session`).

    `worker_resource`: on a cluster, a custom resource each worker also requests (one unit),
    so workers are placed only on nodes advertising it and a restarted group waits for such
    a node (settings.ray_worker_resource, GAN_RAY_WORKER_RESOURCE); a local Ray ignores it.

    `storage_root` is the RunConfig storage path on `spec.run_fs` ("<bucket>/ray" for S3, a
    local folder for bench); the run's files and checkpoints go to `<storage_root>/<run_id>`.
    """
    tc = spec.train_cfg
    need_gpus = tc.num_workers if tc.use_gpu else 0
    streams = spec.data_path == "stream"
    need_cpus = tc.num_workers * tc.cpus_per_worker + (STREAM_READ_CPUS if streams else 0)
    with ray_session(address, num_cpus=need_cpus, num_gpus=need_gpus, token_file=token_file,
                     fallback_local=fallback_local) as session:
        datasets = ({DATASET_KEY: train_dataset(_need(spec.settings, "settings"),
                                                _need(spec.dataset, "a dataset"),
                                                seed=tc.seed)}
                    if streams else None)
        # The progress queue lives on the driver's node (as Ray Train's controller does): on
        # a cluster, losing a worker node must not lose the queue the driver drains.
        queue = Queue(actor_options={  # RAY
            "num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(
                ray.get_runtime_context().get_node_id(), soft=False)},  # RAY
        ) if on_epoch is not None else None
        resources = resources_per_worker(tc, worker_resource=worker_resource,
                                         local=session.local)
        trainer = trainer_class(session)(  # RAY
            train_loop_per_worker,
            train_loop_config={"spec": replace(spec, progress=queue)},
            datasets=datasets,
            torch_config=torch_config(session),
            scaling_config=ScalingConfig(num_workers=tc.num_workers, use_gpu=tc.use_gpu,
                                         resources_per_worker=resources),
            run_config=RunConfig(
                name=spec.run_id, storage_path=storage_root,
                storage_filesystem=spec.run_fs,
                failure_config=FailureConfig(max_failures=tc.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=CHECKPOINTS_TO_KEEP),
                # gloo on loopback also in a local Ray this process did not start (one started
                # by `ray_cluster.start_local` already sets it for every actor).
                worker_runtime_env=({"env_vars": loopback_env_vars()} if session.local
                                    else None),
                # Ray Train's own INFO lines (every report, per worker) would bury the
                # progress lines; warnings and errors still show.
                logging_config=LoggingConfig(log_level="WARNING"),
            ),
        )
        t0 = time.time()
        try:
            result = _fit(trainer, queue, on_epoch)
        except TrainingFailedError as e:  # RAY
            diverged = read_json_fs(spec.run_fs, spec.file(DIVERGED_FILE))
            if diverged is not None:
                raise TrainingDiverged(spec.run_id, int(diverged["step"]),
                                       str(diverged["reason"])) from None
            raise TrainingFailed(f"training run {spec.run_id} failed (train.max_failures="
                                 f"{tc.max_failures}): {e}") from e
        finally:
            if queue is not None:
                queue.shutdown()  # RAY
        fit_s = time.time() - t0
    summary = result.return_value or {}
    if "diverged" in summary:  # the group restarted after a divergence and stopped at once
        d = summary["diverged"]
        raise TrainingDiverged(spec.run_id, int(d["step"]), str(d["reason"]))
    started = summary.get("first_epoch_started_at")
    return Outcome(
        summary=summary,
        checkpoint_path=result.checkpoint.path if result.checkpoint is not None else None,
        ray_init_s=session.init_s,
        startup_s=(started - t0) if started else math.nan,
        fit_s=fit_s,
    )


def resources_per_worker(tc: TrainConfig, *, worker_resource: str | None,
                         local: bool) -> dict[str, float]:
    """What each Ray Train worker reserves: its CPUs, one GPU with `use_gpu`, and on a cluster
    one unit of `worker_resource` when set (a local Ray advertises no custom resource)."""
    resources: dict[str, float] = {"CPU": tc.cpus_per_worker}
    if tc.use_gpu:
        resources["GPU"] = 1
    if worker_resource and not local:
        resources[worker_resource] = 1
    return resources


def _need(value: Any, what: str) -> Any:
    if value is None:
        raise ValueError(f"streaming the dataset needs {what} in the run's spec")
    return value


def _fit(trainer: TorchTrainer, queue: Queue | None, on_epoch: OnEpoch | None) -> Any:
    """`trainer.fit()`; with `on_epoch`, fit runs in a thread while this one drains the queue
    (callbacks run here, in the caller's thread, e.g. inside a Prefect task)."""
    if queue is None or on_epoch is None:
        return trainer.fit()  # RAY
    future: Future[Any] = Future()

    def fit() -> None:
        try:
            future.set_result(trainer.fit())  # RAY
        except BaseException as e:  # handed to the caller's thread below
            future.set_exception(e)

    # A daemon thread, not an executor: on Ctrl-C here the caller goes on at once (and a
    # local Ray is shut down by `ray_session`, which ends fit) instead of joining the thread.
    threading.Thread(target=fit, name="ray-fit", daemon=True).start()
    while True:
        finished = future.done()
        for metrics in _drain(queue, wait_s=0.0 if finished else 0.5):
            try:
                on_epoch(metrics)
            except Exception:  # progress display must never stop training
                log.exception("on_epoch callback failed (training goes on)")
        if finished:
            return future.result()


def _drain(queue: Queue, *, wait_s: float) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    try:
        items.append(queue.get(block=wait_s > 0, timeout=wait_s or None))  # RAY
        while True:
            items.append(queue.get_nowait())  # RAY
    except Empty:
        pass
    return items

