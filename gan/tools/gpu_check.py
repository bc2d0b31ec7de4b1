"""`python -m gan.tools.gpu_check` (`make gpu-check`): the default model on a GPU, in < 5 min.

What this module is: one prepared script for a machine with an NVIDIA GPU. It trains
PRESETS["default"] (or, with `--recipe r3gan`, PRESETS["r3gan"] at its GPU sizing
`GPU_SIZING["r3gan"]`: width 256, 2 blocks per stage, batch 256) for a fixed number of steps
(`--steps`, default 300: 3 epochs of 100 batches of 64 digits, or of 256 for r3gan) with
`use_gpu=True`, bf16 autocast off and on,
  (a) in this process (`gan.train.loop.train_local`), and
  (b) when Ray is installed, through Ray Train with one GPU worker (NCCL, a local Ray),
and prints steady-state images/s (median of the epochs after the first), peak GPU memory
(`torch.cuda.max_memory_allocated`) and the bf16 flag, as a table and as JSON lines.
Without a CUDA device it says so and exits with status 2.

It runs on a bare GPU image: part (a) needs only torch, numpy, scikit-learn, safetensors,
pydantic and pydantic-settings (nothing here or in what (a) imports pulls in ray, pyarrow,
boto3, mlflow or prefect at import time). When `import ray` (or another piece of the Ray
part) fails, it prints one line saying the Ray part was skipped, keeps the in-process table,
and exits 0. Hidden options for tests: `--device cpu` (the same code on the CPU, bf16 through
CPU autocast), `--no-ray`.

What it is not: no assertion on speed; no multi-GPU check (one GPU is what the lent machines
have; `num_workers` > 1 on a cluster is the CPU DDP code path with NCCL as the backend).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from typing import Any

import torch

from gan.core.config import resolve_configs
from gan.tools.bench import bench_data, steady
from gan.train.loop import train_local

STEPS = 300  # per configuration: 3 epochs of 100 batches of 64
# A recipe's GPU sizing over its preset (the CPU presets are sized for 2 cores). r3gan: the
# paper's CIFAR-10 net is 768 wide, 2 blocks per stage, batch 512; a third of the width fits a
# quick check and a 78 GiB GPU with room (docs/recipes.md).
GPU_SIZING: dict[str, dict[str, dict[str, Any]]] = {
    "default": {"model": {}, "train": {}},
    "r3gan": {"model": {"base_channels": 256, "blocks_per_stage": 2},
              "train": {"batch_size": 256}},
}
EPOCHS = 3  # the first is warm-up (cuDNN autotuning, allocator growth)
NO_CUDA_EXIT = 2


def no_cuda_message() -> str | None:
    """Why this machine cannot run the check, or None when it can."""
    if torch.cuda.is_available():
        return None
    build = torch.version.cuda or "none (a CPU-only build)"
    return (f"gpu-check: no CUDA device found: torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, CUDA build {build}). Run `make gpu-check` on a "
            "machine with an NVIDIA GPU and a CUDA build of torch; nothing was trained.")


def _configs(device: str, bf16: bool, recipe: str = "default") -> tuple[Any, Any]:
    gpu = device == "cuda"
    size = GPU_SIZING[recipe]
    return resolve_configs(recipe, model=size["model"], train={
        **size["train"], "epochs": EPOCHS, "use_gpu": gpu, "bf16": bf16 and gpu,
        "checkpoint_every": EPOCHS, "num_workers": 1, "cpus_per_worker": 1})


def _steady(per_epoch: list[float]) -> float:
    """Median images/s of the epochs after the first (as `gan.tools.bench.steady`)."""
    return steady(per_epoch)


def _peak_mb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None


def in_process(data: Any, device: str, bf16: bool, recipe: str = "default") -> dict[str, Any]:
    """One configuration trained by `gan.train.loop.train_local` on `device`."""
    model_cfg, train_cfg = _configs(device, bf16, recipe)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seen: list[float] = []
    train_local(data, model_cfg, train_cfg, lambda m, _c: seen.append(m["images_per_s"]),
                device=device, autocast_dtype=torch.bfloat16 if bf16 else None)
    if device == "cuda":
        torch.cuda.synchronize()
    return {"where": "in-process", "device": device, "bf16": bf16, "recipe": recipe,
            "images_per_s": _steady(seen), "peak_memory_mb": _peak_mb(device)}


def on_ray(data: Any, device: str, bf16: bool, root: str) -> dict[str, Any]:
    """One configuration through Ray Train, one worker (Ray must be initialised)."""
    # lazy: a bare GPU image may lack Ray and pyarrow; `ray_rows` probes for them first
    from pyarrow import fs as pafs

    from gan.train.ray.driver import run
    from gan.train.ray.worker import RunSpec

    model_cfg, train_cfg = _configs(device, bf16)
    run_id = f"gpu-check-{'bf16' if bf16 else 'fp32'}-{time.time_ns()}"
    spec = RunSpec(run_id=run_id, model_cfg=model_cfg, train_cfg=train_cfg,
                   run_dir=f"{root}/{run_id}", run_fs=pafs.LocalFileSystem(), data=data,
                   echo=False)
    out = run(spec, storage_root=root)
    hist = out.summary["history"]
    peaks = [h["max_memory_allocated_mb"] for h in hist if "max_memory_allocated_mb" in h]
    return {"where": "ray-1-worker", "device": device, "bf16": bf16,
            "images_per_s": _steady([h["images_per_s"] for h in hist]),
            "peak_memory_mb": max(peaks) if peaks else None, "startup_s": out.startup_s}


def ray_rows(data: Any, device: str, variants: tuple[bool, ...]) -> list[dict[str, Any]] | None:
    """The Ray rows, or None (after printing why) when Ray or its I/O stack is missing."""
    try:  # the probe: a bare GPU image may lack ray (or pyarrow, boto3 behind gan.train.ray.driver)
        import gan.train.ray.driver  # noqa: F401
        from gan.train.ray.cluster import start_local, stop
    except ImportError as e:
        print(f"gpu-check: Ray part skipped: {e} (install the package's dependencies to run "
              "it); the in-process figures above stand.", flush=True)
        return None
    root = tempfile.mkdtemp(prefix="gan-gpu-check-")
    session = start_local(num_cpus=2, num_gpus=1 if device == "cuda" else 0)
    try:
        return [on_ray(data, device, bf16, root) for bf16 in variants]
    finally:
        stop(session)
        shutil.rmtree(root, ignore_errors=True)


def format_rows(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'where':<16}{'bf16':>6}{'images/s':>12}{'peak MiB':>11}"]
    for r in rows:
        peak = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.1f}"
        lines.append(f"{r['where']:<16}{'on' if r['bf16'] else 'off':>6}"
                     f"{r['images_per_s']:>12.0f}{peak:>11}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m gan.tools.gpu_check", description=(
        "Train the default model on the GPU for a fixed number of steps; print images/s, "
        "peak GPU memory and bf16 on/off."))
    ap.add_argument("--steps", type=int, default=STEPS,
                    help=f"training steps per configuration (default {STEPS})")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help=argparse.SUPPRESS)
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray Train part")
    ap.add_argument("--recipe", choices=sorted(GPU_SIZING), default="default",
                    help="default, or r3gan at its GPU sizing (GPU_SIZING; in-process only)")
    args = ap.parse_args(argv)
    if args.steps < EPOCHS:
        ap.error(f"--steps must be at least {EPOCHS} (one batch per epoch), got {args.steps}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda":
        why = no_cuda_message()
        if why:
            print(why, file=sys.stderr)
            return NO_CUDA_EXIT
    t0 = time.perf_counter()
    batches = args.steps // EPOCHS
    batch = _configs(args.device, False, args.recipe)[1].batch_size
    data = bench_data(batches * batch)  # `batches` batches per epoch
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    print(f"gpu-check on {name} (torch {torch.__version__}, CUDA {torch.version.cuda}): "
          f"{args.recipe} model, {EPOCHS} epochs × {batches} batches of {batch} per "
          "configuration", flush=True)
    variants = (False, True)
    rows = [in_process(data, args.device, bf16, args.recipe) for bf16 in variants]
    print(format_rows(rows), flush=True)
    ray_part = not args.no_ray and args.recipe == "default"
    more = ray_rows(data, args.device, variants) if ray_part else None
    if more:
        rows += more
        print(format_rows(more), flush=True)
    for r in rows:
        print(json.dumps(r))
    print(f"gpu-check done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
