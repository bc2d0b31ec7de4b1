"""What runs inside each Ray Train worker: set-up, the epoch loop, one report per epoch.

What this module is: `RunSpec` (everything a worker needs, shipped by Ray with the function),
`train_loop_per_worker` (the function Ray's TorchTrainer runs on every rank) and the run files
(`run.json`, `trained.json`, `diverged.json`) both the driver and the workers read, through
one pyarrow filesystem (S3, or a local folder for `gan bench`).

Per worker: torch threads = CPUs reserved for it; device from Ray (one GPU each, NCCL) or CPU
(gloo); state from `ray.train.get_checkpoint()` (resume) or fresh; G and D wrapped by
`gan.train.ddp.wrap_models`; a `DistributedSampler` batch source over the version loaded whole,
or this worker's shard of the streamed version (`gan.train.ray.stream`, when the driver chose
`data_path` "stream"); `gan.train.loop.run_epochs` with a
report callback that, every epoch and on every rank, agrees on the sample count and the
time-limit vote (one all-reduce), prints the progress line (rank 0), and calls
`ray.train.report` (rank 0 attaches the checkpoint bytes as `checkpoint.pt`).

What it is not: no GAN math (`gan.train.steps`, `gan.train.loop`), no Ray set-up
(`gan.train.ray.cluster`,
`gan.train.ray.driver`). Every Ray call is marked `# RAY`.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray  # RAY
import ray.train  # RAY
import ray.train.torch  # RAY
import torch
import torch.distributed as dist
from pyarrow import fs as pafs

from gan.core.config import ModelConfig, TrainConfig
from gan.core.records import DatasetRef
from gan.core.settings import Settings
from gan.data.prepare import PreparedData, load_prepared
from gan.io.jsonio import read_json_fs, write_json_fs
from gan.io.storage import Storage
from gan.nets.models import sample_images
from gan.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    state_from_checkpoint,
)
from gan.train.ddp import (
    CountingBatches,
    FaultSpec,
    all_sum,
    format_progress,
    per_worker_batch,
    sharded_batches,
    wrap_models,
)
from gan.train.loop import Batches, DivergenceError, run_epochs
from gan.train.ray.stream import shard_batches
from gan.train.state import TrainState, make_state
from gan.train.stream import DataPath, shuffle_buffer_rows

log = logging.getLogger(__name__)  # in a Ray Train worker: to the console Ray forwards
CHECKPOINT_FILE = "checkpoint.pt"
RUN_FILE = "run.json"  # model config + dataset version a run id was started with
TRAINED_FILE = "trained.json"  # the TrainedRef of the last train() that returned
DIVERGED_FILE = "diverged.json"  # written by the rank that hit DivergenceError
PREVIEW_N, PREVIEW_SEED = 64, 0  # the live sample grid: same latents every time


@dataclass(frozen=True)
class RunSpec:
    """One run, as every worker receives it (pickled by Ray with the train function).

    Secrets: `settings` (S3 keys as SecretStr) and `run_fs` travel inside Ray's object store
    only; repr=False keeps them, the data and the queue handle out of any log line."""

    run_id: str
    model_cfg: ModelConfig
    train_cfg: TrainConfig
    run_dir: str  # filesystem path of the run: "<bucket>/ray/<run_id>" or a local folder
    run_fs: pafs.FileSystem = field(repr=False)
    settings: Settings | None = field(default=None, repr=False)  # S3 access (dataset, marker)
    dataset: DatasetRef | None = None  # read from storage by each worker, or
    data: PreparedData | None = field(default=None, repr=False)  # in memory (bench)
    deadline: float | None = None  # time.time() after which workers stop after their epoch
    fault: FaultSpec | None = None  # test-only fault hook
    progress: Any = field(default=None, repr=False)  # ray.util.queue.Queue for rank 0's metrics
    echo: bool = True  # rank 0 prints the per-epoch progress line (unless `progress` takes it)
    # Every this many epochs (and at the last), rank 0 adds PREVIEW_N seeded samples of the
    # published G to the metrics it queues (key "preview", (n, C, H, W) float32 numpy); 0: never.
    preview_every: int = 0
    # "memory": each worker loads the dataset version whole; "stream": it iterates its shard of
    # the Ray Dataset the driver passes (`gan.train.ray.stream`). Set by the driver.
    data_path: DataPath = "memory"

    def file(self, name: str) -> str:
        return f"{self.run_dir}/{name}"


# --------------------------------------------------------------------------- the worker


class _TimeLimitReached(Exception):
    """Raised by the report callback on every rank after the final checkpoint was reported."""


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train's per-worker entry point; returns rank 0's summary (Result.return_value)."""
    spec: RunSpec = config["spec"]
    ctx = ray.train.get_context()  # RAY
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    tc = spec.train_cfg
    torch.set_num_threads(tc.cpus_per_worker)  # = the CPUs Ray reserved for this worker
    _quiet_ray_info_logs()
    diverged = read_json_fs(spec.run_fs, spec.file(DIVERGED_FILE))
    if diverged is not None:
        # An earlier attempt diverged and Ray restarted the group: stop, train nothing.
        return {"diverged": diverged} if rank == 0 else None
    device = ray.train.torch.get_device() if tc.use_gpu else torch.device("cpu")  # RAY
    source, version = _batch_source(spec, rank, world, device)
    state, resumed_from = _initial_state(spec, device, rank, world)
    nodes = _placement(world)
    wrap_models(state, device, world)
    batches = CountingBatches(source, before_batch=_fault_hook(spec, rank, state))
    reporter = _Reporter(spec, state, rank=rank, device=device, batches=batches)
    if rank == 0 and spec.echo:
        log.info("run %s: epochs %d..%d on %d worker(s), %s, batch %d (per worker %d)",
                 spec.run_id, state.epoch + 1, tc.epochs, world, device, tc.batch_size,
                 tc.batch_size // world)
    try:
        run_epochs(state, batches, tc, reporter, device=device,
                   autocast_dtype=torch.bfloat16 if tc.bf16 else None, is_chief=rank == 0,
                   dataset_version=version, rank=rank, images_per_epoch=_n_train(spec))
    except _TimeLimitReached:
        pass
    except DivergenceError as e:
        # Tell the restarted group (and the driver) before Ray tears this group down.
        write_json_fs(spec.run_fs, spec.file(DIVERGED_FILE),
                   {"step": e.step, "reason": e.reason, "rank": rank, "epoch": state.epoch + 1})
        raise
    if rank != 0:
        return None
    return {"history": state.history, "epochs_completed": state.epoch,
            "global_step": state.step, "resumed_from_epoch": resumed_from,
            "stopped_by_time_limit": reporter.stopped, "dataset_version": version,
            "first_epoch_started_at": batches.started_at, "world_size": world,
            "nodes": nodes, "data_path": spec.data_path}


def _batch_source(spec: RunSpec, rank: int, world: int, device: torch.device
                  ) -> tuple[Batches, str]:
    """(this rank's batch source, the dataset version it reads): the version's train shards
    streamed by Ray Data (`spec.data_path` "stream"), or the whole version in memory."""
    tc = spec.train_cfg
    if spec.data_path == "stream":
        ref = _need_dataset(spec)
        per = per_worker_batch(tc.batch_size, world)
        source = shard_batches(
            batch_size=per, drop_last=ref.n_train >= tc.batch_size, seed=tc.seed, rank=rank,
            shuffle_rows=shuffle_buffer_rows(tc.max_in_memory_mb, n_train=ref.n_train,
                                             channels=ref.channels, image_size=ref.image_size,
                                             batch_size=per),
            shape=(ref.channels, ref.image_size, ref.image_size))
        return source, ref.version
    data = spec.data if spec.data is not None else load_prepared(
        Storage.from_settings(_need_settings(spec)), _need_dataset(spec))
    source = sharded_batches(data.x_train, data.y_train, tc, rank=rank, world_size=world,
                             pin_memory=device.type == "cuda")
    return source, data.version


def _placement(world: int) -> list[str]:
    """The Ray node id of every rank, by rank (one all-gather at start): where the run ran."""
    node = ray.get_runtime_context().get_node_id()  # RAY
    if world == 1 or not dist.is_initialized():
        return [node]
    nodes: list[Any] = [None] * world
    dist.all_gather_object(nodes, node)
    return [str(n) for n in nodes]


def _quiet_ray_info_logs() -> None:
    """Keep this worker's console to our lines and Ray's warnings.

    Ray Train logs every report (all metrics, every rank) at INFO through a logger named
    after a file path, so its LoggingConfig(log_level=...) filter (which matches "ray.train*"
    names) misses it. Root at WARNING silences it; our `gan` loggers stay at INFO (a record
    propagates to the root's handlers whatever the root's level)."""
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("gan").setLevel(logging.INFO)


def _need_settings(spec: RunSpec) -> Settings:
    if spec.settings is None:
        raise ValueError(f"run {spec.run_id}: a dataset in storage needs settings")
    return spec.settings


def _n_train(spec: RunSpec) -> int | None:
    """The train split's images (a schedule's horizon: `gan.train.schedule`), when known."""
    if spec.data is not None:
        return len(spec.data.x_train)
    return spec.dataset.n_train if spec.dataset is not None else None


def _need_dataset(spec: RunSpec) -> DatasetRef:
    if spec.dataset is None:
        raise ValueError(f"run {spec.run_id}: neither a dataset reference nor in-memory data")
    return spec.dataset


def _initial_state(spec: RunSpec, device: torch.device, rank: int, world: int
                   ) -> tuple[TrainState, int]:
    """(state, epoch resumed from): the newer of the checkpoint Ray hands this attempt and the
    run's latest complete one in storage (`latest_complete_checkpoint`, chosen by rank 0 for
    all ranks), or fresh. Looked up at every start of the worker group: a first start of a
    stopped run id, and every restart after a worker (or its node) died."""
    candidates: list[tuple[dict[str, Any], str]] = []
    checkpoint = ray.train.get_checkpoint()  # RAY
    if checkpoint is not None:
        with checkpoint.as_directory() as d:  # RAY (downloads from S3 when remote)
            candidates.append((load_checkpoint(Path(d, CHECKPOINT_FILE).read_bytes()),
                               checkpoint.path))
    stored = _from_rank0(latest_complete_checkpoint(spec.run_fs, spec.run_dir)
                         if rank == 0 else None, world)
    if stored is not None:
        with spec.run_fs.open_input_stream(f"{stored}/{CHECKPOINT_FILE}") as f:
            candidates.append((load_checkpoint(f.read()), stored))
    if not candidates:
        return make_state(spec.model_cfg, spec.train_cfg, device), 0
    ckpt, where = max(candidates, key=lambda c: int(c[0]["epoch"]))  # Ray's wins a tie
    state = state_from_checkpoint(ckpt, device, train_cfg=spec.train_cfg)
    if rank == 0 and spec.echo:
        log.info("run %s: resumed from checkpoint at epoch %d (step %d, %s)", spec.run_id,
                 state.epoch, state.step, where)
    return state, state.epoch


def _from_rank0(value: str | None, world: int) -> str | None:
    """Rank 0's `value` on every rank (one broadcast): all ranks resume from one checkpoint."""
    if world == 1 or not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def latest_complete_checkpoint(fs: pafs.FileSystem, run_dir: str) -> str | None:
    """The run's latest COMPLETE checkpoint folder in storage, for when Ray's record lags.

    Ray registers a reported checkpoint only when its controller next polls the workers (every
    2 s by default), and records it in `checkpoint_manager_snapshot.json` after that. A worker
    (or the node under it) that dies in between takes the pending report with it: Ray's
    restart would hand the checkpoint before (or none), though the newer one is complete in
    storage; likewise when storage dies after an upload but before the snapshot. So the newest
    `checkpoint_epoch_<N>/checkpoint.pt` that loads (weights-only) and says epoch N is offered
    too, and the workers start from whichever of the two is newer; a partial upload fails that
    check and is skipped. None when no checkpoint is complete."""
    infos = fs.get_file_info(pafs.FileSelector(run_dir, allow_not_found=True))
    found = sorted((int(m.group(1)), i.path) for i in infos if i.type == pafs.FileType.Directory
                   and (m := re.fullmatch(r"checkpoint_epoch_(\d+)", i.base_name)))
    for epoch, path in reversed(found):
        try:
            with fs.open_input_stream(f"{path}/{CHECKPOINT_FILE}") as f:
                if load_checkpoint(f.read())["epoch"] == epoch:
                    return path
        except (OSError, CheckpointError):
            continue  # missing or partial: try the one before
    return None


class _Reporter:
    """The `report` callback of `run_epochs`: the same collective and `ray.train.report` call
    on every rank every epoch; only rank 0 prints, feeds the progress queue and checkpoints."""

    def __init__(self, spec: RunSpec, state: TrainState, *, rank: int, device: torch.device,
                 batches: CountingBatches) -> None:
        self.spec, self.state, self.rank, self.device, self.batches = (
            spec, state, rank, device, batches)
        self.stopped = False

    def __call__(self, metrics: dict[str, Any], checkpoint: Callable[[], bytes] | None) -> None:
        epoch, total = int(metrics["epoch"]), self.spec.train_cfg.epochs
        out_of_time = (self.spec.deadline is not None and epoch < total
                       and time.time() >= self.spec.deadline)
        # One all-reduce: the samples all ranks consumed, and whether any rank is out of time
        # (ranks must agree, or one would wait forever in the next epoch's all-reduce).
        samples, votes = all_sum([float(self.batches.count), float(out_of_time)], self.device)
        stop = votes > 0
        dt = metrics["epoch_time_s"]
        # Global figures (all ranks), also into the history the checkpoint stores.
        extra = {"samples": int(samples), "images_per_s": samples / dt if dt > 0 else 0.0,
                 "stopped_by_time_limit": float(stop)}
        if self.device.type == "cuda":
            extra["max_memory_allocated_mb"] = (
                torch.cuda.max_memory_allocated(self.device) / 2**20)
        self.state.history[-1].update(extra)
        m = {**metrics, **extra}
        if stop and checkpoint is None and self.rank == 0:
            checkpoint = functools.partial(save_checkpoint, self.state)  # the final one
        if self.rank == 0:
            # One line per epoch on the user's terminal: when the driver takes the metrics
            # (`on_epoch`: the flow logs the line, to the terminal and the Prefect UI), printing
            # it here too would show it twice (Ray forwards this worker's output).
            if self.spec.echo and self.spec.progress is None:
                log.info("%s", format_progress(m, total))
            if self.spec.progress is not None:
                queued = {**m, **self._preview(epoch, total)}
                self.spec.progress.put_nowait(queued)  # RAY (an actor call; the driver polls)
        _report(m, checkpoint, epoch)
        if stop:
            self.stopped = True
            raise _TimeLimitReached


    def _preview(self, epoch: int, total: int) -> dict[str, Any]:
        """{"preview": (PREVIEW_N, C, H, W) samples} on preview epochs, else {}."""
        every = self.spec.preview_every
        if every <= 0 or (epoch % every and epoch != total):
            return {}
        G = self.state.generator
        cfg = self.spec.model_cfg
        labels = torch.arange(PREVIEW_N) % cfg.num_classes if cfg.conditional else None
        x = sample_images(G, PREVIEW_N, PREVIEW_SEED, labels)  # (64, C, H, W) on CPU
        return {"preview": x.numpy()}


def _report(metrics: dict[str, Any], checkpoint: Callable[[], bytes] | None, epoch: int) -> None:
    """`ray.train.report`, with the checkpoint bytes as `checkpoint.pt` in a temp folder."""
    name = f"checkpoint_epoch_{epoch:05d}"
    if checkpoint is None:
        ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)  # RAY
        return
    with tempfile.TemporaryDirectory(prefix="gan-ckpt-") as d:
        Path(d, CHECKPOINT_FILE).write_bytes(checkpoint())
        # SYNC upload (the default): the temp folder may go once report returns.
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),  # RAY
                         checkpoint_dir_name=name)


# --------------------------------------------------------------------------- fault hook


def _fault_hook(spec: RunSpec, rank: int, state: TrainState
                ) -> Callable[[int, int], None] | None:
    """The test-only fault (see `gan.train.ddp.FaultSpec`), or None."""
    fault = spec.fault
    if fault is None:
        return None

    def hook(epoch: int, batch_index: int) -> None:
        if not fault.due(epoch, batch_index, rank) or not _claim(fault.once_marker, spec):
            return
        if fault.exit_at_epoch is not None:
            # First let Ray register every report made so far: a report still waiting in this
            # process for the controller's next poll (every 2 s) dies with it, and the restart
            # would then go back one checkpoint further than the test expects.
            ray.train.get_all_reported_checkpoints(  # RAY
                consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED)
            log.warning("run %s: fault hook: rank %d exits in epoch %d", spec.run_id, rank,
                        epoch)
            os._exit(1)  # a real process death: no exception, no clean-up
        raise DivergenceError(state.step, f"injected by the test fault hook in epoch {epoch}")

    return hook


def _claim(marker: str, spec: RunSpec) -> bool:
    """Create the once-marker; False when it already exists (the fault fired before)."""
    if marker.startswith("s3://"):
        storage = Storage.from_settings(_need_settings(spec))
        if storage.exists(marker):
            return False
        storage.put_bytes(marker, b"fired")
        return True
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        return True
    except FileExistsError:
        return False
