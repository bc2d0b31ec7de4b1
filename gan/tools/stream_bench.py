"""What streaming costs: training images/s on the stack, in memory vs streamed from S3.

`python -m gan.tools.stream_bench` (needs `gan stack up`): prepares the bundled digits into the
stack's S3 (or reuses that version), then trains the same recipe twice with Ray Train
(`gan.train.ray.driver.train`, one worker): `train.stream=never` (the version loaded whole)
and `train.stream=always` (its Parquet shards streamed by Ray Data, `gan.train.ray.stream`).
It prints one JSON line per path — steady images/s (median of the epochs after the first,
timed inside the worker: Ray start-up and the driver's sha256 pass excluded) — and the ratio
stream / memory. Each run id is new, so nothing is resumed.

What it is not: no assertion on speed (tests never assert timings), no MLflow, no evaluation.
"""

from __future__ import annotations

import argparse
import json
import uuid

from gan.core.config import DataConfig, resolve_configs
from gan.core.settings import Settings
from gan.data.prepare import prepare
from gan.io.storage import Storage
from gan.tools.bench import steady
from gan.train.ray.driver import train


def stream_bench(settings: Settings, *, preset: str = "smoke", epochs: int = 4,
                 batch_size: int = 64) -> dict[str, float]:
    """{"memory": images/s, "stream": images/s, "ratio": stream / memory} on the digits."""
    storage = Storage.from_settings(settings)
    dataset = prepare(DataConfig(), storage)
    out: dict[str, float] = {}
    for stream, key in (("never", "memory"), ("always", "stream")):
        model_cfg, train_cfg = resolve_configs(preset, train={
            "epochs": epochs, "batch_size": batch_size, "checkpoint_every": epochs,
            "stream": stream})
        ref = train(settings, dataset, model_cfg, train_cfg,
                    run_id=f"stream-bench-{key}-{uuid.uuid4().hex[:8]}")
        if ref.data_path != key:
            raise RuntimeError(f"train.stream={stream} took the {ref.data_path} path")
        out[key] = steady([h["images_per_s"] for h in ref.history])
        print(json.dumps({"data_path": key, "preset": preset, "epochs": epochs,
                          "batch_size": batch_size, "n_train": dataset.n_train,
                          "images_per_s": round(out[key], 1),
                          "per_epoch": [round(h["images_per_s"], 1) for h in ref.history]}),
              flush=True)
    out["ratio"] = out["stream"] / out["memory"]
    print(json.dumps({"stream_over_memory": round(out["ratio"], 3)}), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gan.tools.stream_bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=("smoke", "default", "seed"), default="smoke")
    ap.add_argument("--epochs", type=int, default=4, help="the first is warm-up")
    ap.add_argument("--batch-size", type=int, default=64)
    args = ap.parse_args(argv)
    if args.epochs < 2:
        ap.error("--epochs must be at least 2 (the first is warm-up)")
    stream_bench(Settings.load(), preset=args.preset, epochs=args.epochs,
                 batch_size=args.batch_size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
