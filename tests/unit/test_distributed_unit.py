"""gan.train.ddp / gan.train.ray.driver / gan.train.ray.worker / gan.tools.bench /
gan.tools.gpu_check: the pure parts.

Batch math, the DistributedSampler source (1 and W workers see the same samples per epoch),
the fault-hook spec, progress text, the run-files logic (finished / stopped / diverged /
mismatched run ids), and — with two real gloo processes — that the G step all-reduces no
D gradient while the D steps before and after it reduce correctly.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pyarrow import fs as pafs
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from gan.core.config import ModelConfig, TrainConfig
from gan.core.records import DatasetRef, TrainedRef
from gan.train import losses
from gan.train.ddp import (
    CountingBatches,
    FaultSpec,
    all_sum,
    format_progress,
    per_worker_batch,
    sharded_batches,
    wrap_models,
)
from gan.train.loop import run_epochs
from gan.train.state import make_state
from gan.train.steps import d_update, g_update, generate, unwrap

torch.set_num_threads(1)

MODEL = ModelConfig(arch="mlp", latent_dim=8, image_size=8, num_classes=4, g_hidden=(16,),
                    d_hidden=(16,))


def cfg(**kw: Any) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "batch_size": 8, "lr_g": 1e-3, "lr_d": 1e-3,
                          "ema_decay": 0.0, **kw})


# --------------------------------------------------------------------------- batch math


def test_per_worker_batch_splits_the_global_batch() -> None:
    assert per_worker_batch(64, 1) == 64
    assert per_worker_batch(64, 2) == 32
    assert per_worker_batch(128, 8) == 16
    with pytest.raises(ValueError, match="batch_size 64 .* divisible by train.num_workers 3"):
        per_worker_batch(64, 3)
    with pytest.raises(ValueError, match="at least one image"):
        per_worker_batch(0, 4)
    with pytest.raises(ValueError, match="num_workers must be >= 1"):
        per_worker_batch(8, 0)


def _epoch_samples(n: int, batch: int, world: int, epoch: int = 1) -> list[list[int]]:
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)  # image i holds the value i
    y = torch.zeros(n, dtype=torch.int64)
    out = []
    for rank in range(world):
        src = sharded_batches(x, y, cfg(batch_size=batch), rank=rank, world_size=world)
        ids = [int(v) for xb, _ in src(epoch) for v in xb.flatten()]
        for xb, _ in src(epoch):
            assert xb.shape[0] == batch // world  # (B/W, 1, 1, 1)
        out.append(ids)
    return out


@pytest.mark.parametrize("n,batch", [(200, 32), (1437, 128), (100, 64), (64, 64)])
def test_one_and_many_workers_see_the_same_number_of_samples(n: int, batch: int) -> None:
    one = sum(len(r) for r in _epoch_samples(n, batch, 1))
    assert one == (n // batch) * batch
    for world in (2, 4):
        shards = _epoch_samples(n, batch, world)
        assert sum(len(s) for s in shards) == one
        flat = [i for s in shards for i in s]
        assert len(set(flat)) == len(flat)  # disjoint shards: no image twice in an epoch


def test_sharded_batches_reshuffle_per_epoch_deterministically() -> None:
    a1, a2 = _epoch_samples(64, 16, 2, epoch=1), _epoch_samples(64, 16, 2, epoch=2)
    assert a1 != a2  # set_epoch: a new permutation each epoch
    assert a1 == _epoch_samples(64, 16, 2, epoch=1)  # … the same one on a rerun


def test_sharded_batches_reject_impossible_splits() -> None:
    x, y = torch.zeros(3, 1, 1, 1), torch.zeros(3, dtype=torch.int64)
    with pytest.raises(ValueError, match="divisible"):
        sharded_batches(x, y, cfg(batch_size=9), rank=0, world_size=2)
    with pytest.raises(ValueError, match="3 training images cannot be split over 4"):
        sharded_batches(x, y, cfg(batch_size=8), rank=0, world_size=4)


def test_counting_batches_counts_and_runs_the_hook() -> None:
    x, y = torch.zeros(20, 1, 1, 1), torch.zeros(20, dtype=torch.int64)
    calls: list[tuple[int, int]] = []
    src = CountingBatches(sharded_batches(x, y, cfg(batch_size=8), rank=0, world_size=1),
                          before_batch=lambda e, i: calls.append((e, i)))
    assert src.started_at is None
    assert sum(xb.shape[0] for xb, _ in src(3)) == 16 == src.count
    assert calls == [(3, 0), (3, 1)] and src.started_at is not None
    assert all_sum([1.0, 2.0], torch.device("cpu")) == [1.0, 2.0]  # no process group


# --------------------------------------------------------------------------- fault hook


def test_fault_spec_parsing() -> None:
    f = FaultSpec.parse({"exit_at_epoch": 2, "rank": 1, "once_marker": "/tmp/m"})
    assert f == FaultSpec(rank=1, once_marker="/tmp/m", exit_at_epoch=2)
    assert f.due(2, 1, rank=1)
    assert not f.due(2, 0, rank=1) and not f.due(2, 1, rank=0) and not f.due(3, 1, rank=1)
    assert FaultSpec.parse(None) is None and FaultSpec.parse(f) is f
    d = FaultSpec.parse({"diverge_at_epoch": 1, "rank": 0, "once_marker": "s3://b/m"})
    assert d is not None and d.due(1, 1, rank=0) and d.exit_at_epoch is None


@pytest.mark.parametrize("raw,match", [
    ({"exit_at_epoch": 2, "rank": 1}, "'once_marker' is required"),
    ({"exit_at_epoch": 2, "once_marker": "m"}, "'rank' is required"),
    ({"rank": 0, "once_marker": "m"}, "exactly one of"),
    ({"rank": 0, "once_marker": "m", "exit_at_epoch": 1, "diverge_at_epoch": 1}, "exactly one"),
    ({"rank": 0, "once_marker": "m", "exit_at_epoch": 1, "when": 3}, "unknown keys"),
    ({"rank": -1, "once_marker": "m", "exit_at_epoch": 1}, "'rank' must be a non-negative"),
    ({"rank": 0, "once_marker": "m", "exit_at_epoch": "2"}, "'exit_at_epoch' must be"),
    ({"rank": 0, "once_marker": "m", "exit_at_epoch": 0}, "epochs count from 1"),
    ({"rank": 0, "once_marker": "", "exit_at_epoch": 1}, "'once_marker' must be"),
])
def test_fault_spec_rejects_bad_input(raw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FaultSpec.parse(raw)


# --------------------------------------------------------------------------- progress text


def test_format_progress() -> None:
    m = {"epoch": 3, "loss_d": 1.23456, "loss_g": float("nan"), "d_real": 0.61234,
         "d_fake": 0.38, "images_per_s": 1234.4, "epoch_time_s": 2.06}
    line = format_progress(m, 10)
    assert line.startswith("epoch 3/10  loss_d 1.2346  loss_g -  d_real 0.612  d_fake 0.380")
    assert "1234 img/s" in line and "2.1 s" in line and "time limit" not in line
    assert format_progress({**m, "stopped_by_time_limit": 1.0}, 10).endswith(
        "(stopped by time limit)")


# --------------------------------------------------------------------------- run files


def _ref(epochs: int, **kw: Any) -> TrainedRef:
    return TrainedRef(run_id="r1", checkpoint_uri="s3://b/ray/r1/c/checkpoint.pt",
                      dataset_version="v1", model_cfg=MODEL.model_dump(mode="json"),
                      train_cfg=cfg().model_dump(mode="json"), epochs_completed=epochs,
                      global_step=10, history=[{"epoch": 1.0, "loss_g": math.nan}], **kw)


DATASET = DatasetRef(name="tiny", version="v1", uri="s3://b/datasets/tiny/v1/", source="t",
                     n_train=64, n_holdout=8, num_classes=4, image_size=8)


def test_run_files_round_trip_with_nan(tmp_path: Path) -> None:
    from gan.io.jsonio import read_json_fs, write_json_fs

    fs, path = pafs.LocalFileSystem(), f"{tmp_path}/run/x.json"
    assert read_json_fs(fs, path) is None
    write_json_fs(fs, path, _ref(2).model_dump(mode="python"))
    back = TrainedRef.model_validate(read_json_fs(fs, path))
    assert back.epochs_completed == 2 and math.isnan(back.history[0]["loss_g"])


def test_previous_result_decides_finished_stopped_diverged_mismatched(tmp_path: Path) -> None:
    from gan.io.jsonio import write_json_fs
    from gan.train.ray.driver import TrainingDiverged, _previous_result
    from gan.train.ray.worker import DIVERGED_FILE, RUN_FILE, TRAINED_FILE

    fs, run_dir = pafs.LocalFileSystem(), f"{tmp_path}/r1"

    def prev(epochs: int = 2, model: ModelConfig = MODEL, dataset: DatasetRef = DATASET) -> Any:
        return _previous_result(fs, run_dir, "r1", dataset, model, cfg(epochs=epochs))

    assert prev() is None  # nothing stored: start
    write_json_fs(fs, f"{run_dir}/{RUN_FILE}", {"model_cfg": MODEL.model_dump(mode="json"),
                                            "dataset_version": "v1"})
    assert prev() is None  # started, not finished: resume through Ray
    write_json_fs(fs, f"{run_dir}/{TRAINED_FILE}", _ref(2).model_dump(mode="python"))
    assert prev(epochs=2).epochs_completed == 2  # finished: the stored result
    assert prev(epochs=3) is None  # more epochs asked: continue from the checkpoint
    write_json_fs(fs, f"{run_dir}/{TRAINED_FILE}",
               _ref(2, stopped_by_time_limit=True).model_dump(mode="python"))
    assert prev(epochs=2) is None  # stopped by the time limit: continue
    with pytest.raises(ValueError, match=r"model fields \['latent_dim'\]"):
        prev(model=MODEL.model_copy(update={"latent_dim": 9}))
    with pytest.raises(ValueError, match="dataset version v1 \\(now v2\\)"):
        prev(dataset=DATASET.model_copy(update={"version": "v2"}))
    write_json_fs(fs, f"{run_dir}/{DIVERGED_FILE}", {"step": 7, "reason": "non-finite loss"})
    with pytest.raises(TrainingDiverged, match="diverged at step 7: non-finite loss") as e:
        prev()
    assert e.value.step == 7 and e.value.run_id == "r1"


def test_check_request_names_the_problem() -> None:
    from gan.train.ray.driver import _check_request

    _check_request(DATASET, MODEL, cfg(), "run-1")
    with pytest.raises(ValueError, match="run id 'a/b' is not accepted"):
        _check_request(DATASET, MODEL, cfg(), "a/b")
    with pytest.raises(ValueError, match="divisible by train.num_workers 3"):
        _check_request(DATASET, MODEL, cfg(batch_size=8, num_workers=3), "r")
    with pytest.raises(ValueError, match="model expects 1×16²"):
        _check_request(DATASET, MODEL.model_copy(update={"image_size": 16}), cfg(), "r")


def test_loopback_switch_is_restored() -> None:
    from ray._private import ray_constants

    from gan.train.ray.cluster import _loopback_node_ip

    before = ray_constants.ENABLE_RAY_CLUSTER
    with _loopback_node_ip():
        assert ray_constants.ENABLE_RAY_CLUSTER is False
    assert ray_constants.ENABLE_RAY_CLUSTER == before


# --------------------------------------------------------------------------- bench, gpu-check


def test_bench_pieces() -> None:
    from gan.tools.bench import bare_loop, bench_data, steady

    assert steady([1.0, 10.0, 20.0, 30.0]) == 20.0 and steady([5.0]) == 5.0
    data = bench_data(300)
    assert data.x_train.shape == (300, 1, 28, 28) and data.y_train.shape == (300,)
    small = ModelConfig(arch="mlp", g_hidden=(16,), d_hidden=(16,))
    per_epoch = bare_loop(small, cfg(epochs=2, batch_size=100), data)
    assert len(per_epoch) == 2 and all(v > 0 for v in per_epoch)


def test_gpu_check_says_why_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    from gan.tools.gpu_check import NO_CUDA_EXIT, main, no_cuda_message

    if torch.cuda.is_available():  # a GPU machine: the check would run, not refuse
        assert no_cuda_message() is None
        return
    assert main([]) == NO_CUDA_EXIT
    err = capsys.readouterr().err
    assert "gpu-check: no CUDA device found" in err and "nothing was trained" in err


# Run in a fresh interpreter where these packages cannot be imported, as on a bare GPU image
# (torch, numpy, scikit-learn, safetensors, pydantic, pydantic-settings only).
BARE_IMAGE_SCRIPT = """
import importlib.abc, json, sys
MISSING = ("ray", "pyarrow", "boto3", "botocore", "mlflow", "prefect")

class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MISSING:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Missing())
import torch
torch.set_num_threads(1)
from gan.tools.gpu_check import main
code = main(["--device", "cpu", "--steps", "3"])
print("LOADED", json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in MISSING)))
sys.exit(code)
"""


def test_gpu_check_runs_in_process_without_ray_and_says_ray_was_skipped() -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", BARE_IMAGE_SCRIPT], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert "gpu-check: Ray part skipped: No module named 'ray'" in out, out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(row["where"], row["bf16"]) for row in rows] == [
        ("in-process", False), ("in-process", True)]
    assert all(row["images_per_s"] > 0 and row["device"] == "cpu" for row in rows)
    assert "LOADED []" in out  # nothing of Ray, pyarrow, boto3, MLflow, Prefect was imported


# --------------------------------------------------------------------------- DDP, 2 ranks


def _count(state, bucket):  # type: ignore[no-untyped-def]
    # No annotations: DDP checks a hook's annotations at run time, and this module's
    # `from __future__ import annotations` would turn them into strings it rejects.
    state["n"] += 1  # one call per gradient bucket all-reduced
    return allreduce_hook(None, bucket)  # type: ignore[arg-type]


def _flat_grads(m: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in m.parameters()])  # type: ignore[union-attr]


def _same_on_all_ranks(t: torch.Tensor) -> bool:
    got = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(got, t)
    return all(torch.allclose(got[0], g, atol=1e-6) for g in got)


def _ddp_rank(rank: int, world: int, store: str, out_dir: str) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    tc = cfg(batch_size=8)
    state = make_state(MODEL, tc)  # same seeded init on both ranks
    wrap_models(state, torch.device("cpu"), world)
    G, D = state.G, state.D
    n_d, n_g = {"n": 0}, {"n": 0}
    D.register_comm_hook(n_d, _count)
    G.register_comm_hook(n_g, _count)
    gen = torch.Generator().manual_seed(100 + rank)  # each rank its own batch
    x = torch.rand(4, 1, 8, 8, generator=gen) * 2 - 1
    y = torch.randint(0, 4, (4,), generator=gen)
    z = torch.randn(4, 8, generator=gen)
    r: dict[str, Any] = {}
    fake = generate(G, z, y)
    d_update(G, D, state.opt_d, x, y, z, loss=tc.loss, real_label=tc.real_label,
             gp_weight=tc.gp_weight, fake=fake)
    r["d_step"] = (n_d["n"], n_g["n"], _same_on_all_ranks(_flat_grads(D)))
    d_grads = _flat_grads(D).clone()
    g_update(G, D, state.opt_g, z, y, loss=tc.loss, mode_seeking=tc.mode_seeking, fake=fake)
    r["g_step"] = (n_d["n"], n_g["n"], _same_on_all_ranks(_flat_grads(G)),
                   torch.equal(d_grads, _flat_grads(D)))
    # The next D step after the no_sync G step: its reduced gradient must be the mean of
    # the ranks' local gradients (computed here on an unwrapped copy).
    x2 = torch.rand(4, 1, 8, 8, generator=gen) * 2 - 1
    z2 = torch.randn(4, 8, generator=gen)
    plain = copy.deepcopy(unwrap(D))
    with torch.no_grad():
        fake2 = unwrap(G)(z2, y)
    logits = plain(torch.cat([x2, fake2]), y.repeat(2))
    losses.d_loss(tc.loss, logits[:4], logits[4:], real_label=tc.real_label).backward()
    local = _flat_grads(plain)
    dist.all_reduce(local)
    d_update(G, D, state.opt_d, x2, y, z2, loss=tc.loss, real_label=tc.real_label,
             gp_weight=tc.gp_weight)
    r["d_step_2"] = (n_d["n"], torch.allclose(_flat_grads(D), local / world, atol=1e-6))
    # A whole epoch of the real loop on DistributedSampler shards.
    data_x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    data_y = torch.arange(64) % 4
    before = (n_d["n"], n_g["n"])
    run_epochs(state, sharded_batches(data_x, data_y, tc, rank=rank, world_size=world), tc,
               rank=rank)
    r["epoch"] = (n_d["n"] - before[0], n_g["n"] - before[1], state.step)
    params = torch.cat([p.detach().flatten() for m in (G, D) for p in m.parameters()])
    r["params_equal"] = _same_on_all_ranks(params)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(r))
    # Both ranks done with every collective before either tears gloo down: a rank that
    # destroyed the group while the other still had gloo work in flight aborted at exit
    # ("terminate called without an active exception", SIGABRT; seen once in CI).
    dist.barrier()
    dist.destroy_process_group()


def test_ddp_g_step_reduces_no_d_gradient_and_d_sync_stays_correct(tmp_path: Path) -> None:
    # spawn, not fork: after the rest of the unit tier this process holds OpenMP/intra-op
    # thread pools, and a forked child that enters a parallel region waits forever on a futex
    # (seen in CI: the whole tier hung here). Spawned children cost a few seconds of imports.
    mp.start_processes(_ddp_rank, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2,
                       join=True, start_method="spawn")
    for rank in (0, 1):
        r = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert r["d_step"] == [1, 0, True]  # D reduced once (one bucket), G not at all
        # G step: D's count unchanged (no all-reduce of D), G reduced once, D grads untouched
        assert r["g_step"] == [1, 1, True, True]
        assert r["d_step_2"] == [2, True]  # the next D step reduces, to the mean gradient
        # 64 images / global batch 8 = 8 steps: 8 D and 8 G all-reduces
        assert r["epoch"] == [8, 8, 8]
        assert r["params_equal"] is True


# --------------------------------------------------------------------------- progress polling


class _FakeQueue:
    """Stands in for ray.util.queue.Queue (get / get_nowait raising its Empty)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = list(items)

    def get(self, block: bool = True, timeout: float | None = None) -> dict[str, Any]:
        return self.get_nowait()

    def get_nowait(self) -> dict[str, Any]:
        from ray.util.queue import Empty

        if not self.items:
            raise Empty
        return self.items.pop(0)


class _FakeTrainer:
    def __init__(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error = result, error

    def fit(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


def test_fit_with_progress_calls_on_epoch_in_order_and_survives_its_errors() -> None:
    from gan.train.ray.driver import _fit

    seen: list[int] = []

    def on_epoch(m: dict[str, Any]) -> None:
        seen.append(m["epoch"])
        if m["epoch"] == 2:
            raise RuntimeError("artifact service down")  # must not stop training

    q = _FakeQueue([{"epoch": 1}, {"epoch": 2}, {"epoch": 3}])
    assert _fit(_FakeTrainer(result="done"), q, on_epoch) == "done"  # type: ignore[arg-type]
    assert seen == [1, 2, 3]
    with pytest.raises(ValueError, match="worker failed"):
        _fit(_FakeTrainer(error=ValueError("worker failed")), _FakeQueue([]),  # type: ignore[arg-type]
             on_epoch)


def test_ddp_probe_measures_two_ranks_and_their_exchange() -> None:
    from gan.tools.bench import bench_data
    from gan.tools.ddp_probe import probe

    small = ModelConfig(arch="mlp", g_hidden=(16,), d_hidden=(16,))
    per_epoch, exchange_ms = probe(small, cfg(epochs=2, batch_size=100), bench_data(400),
                                   world=2, cpus=2)
    assert len(per_epoch) == 2 and all(v > 0 for v in per_epoch)
    assert exchange_ms > 0
