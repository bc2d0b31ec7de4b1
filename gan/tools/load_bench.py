"""Many application replicas pulling `models:/<name>@champion` at once: the consumer load that
`gan bench --load` measures and `tests/reliability/test_6_load.py` asserts on.

What this module is:
- `run_load(uri, env=..., consumers=16, ...)`: N consumer processes (fresh Pythons, torch
  threads = 1, no `gan` imported there: the same meta-path refusal as
  `tests/portable_client.py`), each looping `mlflow.pyfunc.load_model(uri)` then
  `predict({"n": n, "seed": 0})` as an application would, recording per load its latency, the
  MLflow run and logged model it got, the samples' shape, finiteness and a digest. The
  consumers import (not timed) and report ready; then all start together ("go") and loop until
  the caller's `stop` says so (elapsed seconds, e.g. "the alias moved 5 s ago") or `max_s`.
  Returns every load (`LoadResult`); `summary()` gives p50/p99 load latency and loads/s.
- `bench_workers(settings, uri, workers=(1, 2, 4))`: the same load against a temporary
  `mlflow server` per worker count, started exactly as the stack starts its own
  (`gan.stack.services.plan`, same SQLite store and artifact proxy, another loopback port), so
  the stack's `GAN_MLFLOW_WORKERS` default can be picked from numbers.

What it is not: no assertion (the load test asserts), no training, no MLflow import here
(the consumers import it in their own processes; the test maps run ids to versions).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from gan.core.settings import Settings
from gan.stack import auth, procs
from gan.stack.services import Service, plan
from gan.tools.app_client import NO_PIPELINE_IMPORTS

READY_TIMEOUT_S = 180.0  # 16 cold `import torch, mlflow` on 2 busy cores take ~30-60 s
_CONSUMER = NO_PIPELINE_IMPORTS + r"""
import hashlib, json, os, sys, tempfile, time
import mlflow, mlflow.pyfunc, numpy as np, torch  # the application's imports: not timed
torch.set_num_threads(1)

uri, n, out_path, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
max_s = float(sys.argv[5])
go, stop = os.path.join(folder, "go"), os.path.join(folder, "stop")
open(out_path + ".ready", "w").close()
while not os.path.exists(go):
    time.sleep(0.02)
t_go = float(open(go).read())
with open(out_path, "w") as out:
    while not os.path.exists(stop) and time.time() - t_go < max_s:
        rec = {"t": time.time() - t_go}
        try:
            with tempfile.TemporaryDirectory(dir=folder) as dst:
                t0 = time.perf_counter()
                model = mlflow.pyfunc.load_model(uri, dst_path=dst)
                t1 = time.perf_counter()
                x = model.predict({"n": n, "seed": 0})
                t2 = time.perf_counter()
            meta = model.metadata
            shape = [n, *meta.metadata["image_shape"]]
            rec.update(load_s=t1 - t0, draw_s=t2 - t1, run_id=meta.run_id,
                       model_id=getattr(meta, "model_id", None), shape=list(x.shape),
                       want_shape=shape, dtype=str(x.dtype),
                       finite=bool(np.isfinite(x).all()),
                       digest=hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest())
        except Exception as e:  # every failure is a record: the caller counts them
            rec["error"] = f"{type(e).__name__}: {e}"[:500]
        out.write(json.dumps(rec) + "\n")
        out.flush()
"""


@dataclass
class LoadResult:
    """Every load of every consumer (dicts as the consumers wrote them, plus "consumer")."""

    loads: list[dict[str, Any]]
    consumers: int
    window_s: float  # go → stop
    exit_codes: list[int | None] = field(default_factory=list)
    stderr_tails: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [r for r in self.loads if "error" in r]

    def summary(self) -> dict[str, Any]:
        """p50/p99 of the load latency (s), loads/s over the window, draws, errors."""
        ok = np.array([r["load_s"] for r in self.loads if "error" not in r], dtype=float)
        # loads/s: loads that started inside the window (the last ones end after `stop`)
        started = sum(1 for r in self.loads if "error" not in r and r["t"] < self.window_s)
        q = np.percentile(ok, [50, 99]) if ok.size else [float("nan")] * 2
        # warm: without each consumer's first load (MLflow's one-time requirements check)
        firsts = {min((r["t"], i) for i, r in enumerate(self.loads) if r["consumer"] == c)[1]
                  for c in {r["consumer"] for r in self.loads}}
        warm = np.array([r["load_s"] for i, r in enumerate(self.loads)
                         if "error" not in r and i not in firsts], dtype=float)
        qw = np.percentile(warm, [50, 99]) if warm.size else [float("nan")] * 2
        return {"consumers": self.consumers, "window_s": round(self.window_s, 2),
                "warm_load_p50_s": round(float(qw[0]), 4),
                "warm_load_p99_s": round(float(qw[1]), 4),
                "loads": int(ok.size), "errors": len(self.errors),
                "load_p50_s": round(float(q[0]), 4), "load_p99_s": round(float(q[1]), 4),
                "load_max_s": round(float(ok.max()), 4) if ok.size else None,
                "loads_per_s": round(started / self.window_s, 3) if self.window_s else None}


def run_load(uri: str, *, env: Mapping[str, str], workdir: str | Path, consumers: int = 16,
             n: int = 16, stop: Callable[[float], bool] | None = None, duration_s: float = 60.0,
             max_s: float = 150.0, python: str | None = None) -> LoadResult:
    """Start `consumers` processes on `uri` with environment `env` (MLFLOW_TRACKING_URI and,
    where the server wants them, its credentials), wait until all have imported, start them
    together, and stop them when `stop(elapsed_s)` is true (default: `duration_s` passed) or
    at `max_s`. Consumer processes are always ended, by their pid, before returning."""
    if consumers < 1:
        raise ValueError(f"consumers must be >= 1, got {consumers}")
    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    for f in ("go", "go.tmp", "stop"):
        (folder / f).unlink(missing_ok=True)
    stop = stop or (lambda elapsed: elapsed >= duration_s)
    child_env = dict(env) | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    outs = [folder / f"consumer_{i:02d}.jsonl" for i in range(consumers)]
    errs = [open(folder / f"consumer_{i:02d}.stderr", "wb") for i in range(consumers)]
    started: list[subprocess.Popen[bytes]] = []
    try:
        for out, err in zip(outs, errs, strict=True):
            started.append(subprocess.Popen(
                [python or sys.executable, "-c", _CONSUMER, uri, str(n), str(out), str(folder),
                 str(max_s)], cwd=folder, env=child_env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=err))
        _wait_ready(started, outs)
        t_go = time.time()
        # Written aside then renamed: a consumer polling for "go" must never open it empty
        # (write_text creates the file before it writes; CI saw 16 `float('')` crashes).
        (folder / "go.tmp").write_text(repr(t_go))
        os.replace(folder / "go.tmp", folder / "go")
        while time.time() - t_go < max_s and not stop(time.time() - t_go):
            if all(p.poll() is not None for p in started):
                break
            time.sleep(0.2)
        (folder / "stop").write_text("")
        window = time.time() - t_go
        codes = [_wait(p, timeout_s=120.0) for p in started]
    finally:
        for p in started:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        for err in errs:
            err.close()
    loads = [dict(json.loads(line), consumer=i) for i, out in enumerate(outs) if out.exists()
             for line in out.read_text().splitlines() if line.strip()]
    tails = [(folder / f"consumer_{i:02d}.stderr").read_text(errors="replace")[-1500:]
             for i in range(consumers)]
    return LoadResult(loads, consumers, window, codes, tails)


def _wait_ready(started: list[subprocess.Popen[bytes]], outs: list[Path]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not all(Path(f"{o}.ready").exists() for o in outs):
        dead = [i for i, p in enumerate(started) if p.poll() is not None]
        if dead:
            raise RuntimeError(f"consumer {dead[0]} exited ({started[dead[0]].returncode}) "
                               f"before it was ready; see {outs[dead[0]].with_suffix('.stderr')}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"consumers not ready (imports) within {READY_TIMEOUT_S:.0f} s")
        time.sleep(0.1)


def _wait(p: subprocess.Popen[bytes], *, timeout_s: float) -> int | None:
    try:
        return p.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None


# --------------------------------------------------------------------------- worker counts


def server_service(settings: Settings, workers: int, port: int) -> Service:
    """The stack's MLflow server as `gan stack up` plans it, with `workers` workers on `port`."""
    if settings.mlflow_tracking_uri and not settings.mlflow_tracking_uri.startswith(
            "http://127.0.0.1:"):
        raise RuntimeError(f"MLflow at {settings.mlflow_tracking_uri} is not this machine's "
                           "stack: `gan bench --load` compares worker counts of the local one")
    _, key_id, secret = settings.require_s3()
    local = settings.model_copy(update={"mlflow_workers": workers, "mlflow_port": port,
                                        "mlflow_tracking_uri": None})
    (svc,) = [s for s in plan(local, (key_id, secret)) if s.name == "mlflow"]
    return svc


@contextmanager
def mlflow_server(settings: Settings, workers: int, folder: Path,
                  timeout_s: float = 120.0) -> Iterator[str]:
    """A temporary `mlflow server` with `workers` workers, as the stack starts its own (same
    store, same artifact proxy onto the stack's bucket) on a free loopback port; yields its
    URL and stops its process tree afterwards."""
    svc = server_service(settings, workers, procs.free_port())
    assert svc.health_url
    rec = procs.spawn(svc.argv, svc.env, cwd=folder, log=folder / f"mlflow-{workers}.log",
                      pid_file=folder / f"mlflow-{workers}.pid", url=svc.url)
    try:
        deadline = time.monotonic() + timeout_s
        while not procs.http_ok(svc.health_url, local=True):
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server ({workers} workers) not healthy within "
                                   f"{timeout_s:.0f} s; see {folder / f'mlflow-{workers}.log'}")
            time.sleep(0.5)
        yield svc.url
    finally:
        try:
            procs.terminate_trees([psutil.Process(rec.pid)], grace_s=10.0)
        except psutil.NoSuchProcess:
            pass


def bench_workers(settings: Settings, uri: str, *, workers: tuple[int, ...] = (1, 2, 4),
                  consumers: int = 16, duration_s: float = 30.0,
                  echo: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """`summary()` of the consumer load per worker count of the stack's MLflow server."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="gan-load-") as tmp:
        for w in workers:
            folder = Path(tmp) / f"workers-{w}"
            folder.mkdir()
            with mlflow_server(settings, w, folder) as url:
                # The consumers pull as the stack's read-only identity (as applications do).
                env = {k: v for k, v in os.environ.items()
                       if k not in ("PYTHONPATH", *auth.IDENTITY_VARS)}
                env |= {"MLFLOW_TRACKING_URI": url} | auth.identity_env(
                    settings.mlflow_consumer_file)
                echo(f"{consumers} consumers on {uri}, mlflow server with {w} worker(s), "
                     f"{duration_s:.0f} s ...")
                res = run_load(uri, env=env, workdir=folder / "consumers", consumers=consumers,
                               duration_s=duration_s, max_s=duration_s + 60)
            row = {"mlflow_workers": w, **res.summary()}
            if res.errors:
                row["first_error"] = res.errors[0]["error"]
            rows.append(row)
            echo(json.dumps(row))
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The per-worker-count table (markdown)."""
    head = ("| MLflow workers | loads | errors | load p50 (s) | load p99 (s) | warm p50 (s) "
            "| warm p99 (s) | loads/s |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mlflow_workers']} | {r['loads']} | {r['errors']} | "
                     f"{r['load_p50_s']:.3f} | {r['load_p99_s']:.3f} | "
                     f"{r['warm_load_p50_s']:.3f} | {r['warm_load_p99_s']:.3f} | "
                     f"{r['loads_per_s']:.2f} |")
    return "\n".join(lines)
