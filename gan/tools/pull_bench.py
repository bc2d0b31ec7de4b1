"""`gan bench --pull`: how long a client takes to load a published generator and draw 10,000
images, after its imports.

What this module is: the client's side measured in a fresh Python process (cold caches, no
`gan` imported there: the same meta-path refusal as `tests/portable_client.py`). The process
imports torch and MLflow (not timed), then times `mlflow.pyfunc.load_model(uri,
suppress_warnings=True)` — the call the README gives applications: without it MLflow's first
load in a process scans every installed distribution to compare the model's three pins (≈0.4 s
of CPU in this project's venv, more than the model's own load) — followed by
`predict({"n": 10000, "seed": 0})`: `pull_10k_s` (of which `pull_load_s` loading and
`pull_draw_s` drawing). It repeats load + draw twice more in the same process
(`pull_10k_warm_s`: their median; `pull_10k_best_s`: the fastest of the three, the figure
least disturbed by other processes on a shared machine) and reports the client's threads. The
model is a registered version or a local model directory, or by default the default preset's
G (random weights: speed does not depend on them) saved to a temporary directory, so no stack
is needed. A registered version is pulled as a consumer would (`consumer_identity`): with the
MLflow identity the environment names, else — on the local stack, whose MLflow needs one —
as the stack's read-only consumer (`mlflow-consumer.json`), never as its admin.

What it is not: no training benchmark (`gan.tools.bench`), no assertion on speed.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from gan.core.config import resolve_configs
from gan.core.settings import Settings
from gan.nets.models import build
from gan.registry import model_format as mm
from gan.stack import auth
from gan.tools.app_client import NO_PIPELINE_IMPORTS

N_IMAGES = 10_000
PULL_CALL = "mlflow.pyfunc.load_model(uri, suppress_warnings=True)"  # what _CLIENT times
_CLIENT = NO_PIPELINE_IMPORTS + r"""
import json, sys, time
import mlflow, mlflow.pyfunc, numpy, torch  # the client's imports: not timed

uri, n = sys.argv[1], int(sys.argv[2])
times, loads = [], []
for _ in range(3):
    t0 = time.perf_counter()
    model = mlflow.pyfunc.load_model(uri, suppress_warnings=True)
    t1 = time.perf_counter()
    x = model.predict({"n": n, "seed": 0})
    times.append(time.perf_counter() - t0)
    loads.append(t1 - t0)
    assert x.shape[0] == n and x.dtype == numpy.float32, (x.shape, x.dtype)
print(json.dumps({"times": times, "loads": loads, "threads": torch.get_num_threads()}))
"""


def default_model_dir(path: str | Path) -> Path:
    """The default preset's generator (untrained) as a local model directory at `path`."""
    model_cfg, _ = resolve_configs("default")
    torch.manual_seed(0)
    G, D = build(model_cfg)
    with tempfile.TemporaryDirectory(prefix="gan-pull-") as tmp:
        bundle = mm.write_bundle(Path(tmp) / "gan_generator", model_cfg, G.eval(), D.eval())
        return mm.save_bundle_model(path, bundle)


def consumer_identity(settings: Settings) -> dict[str, str]:
    """MLFLOW_TRACKING_USERNAME/PASSWORD for a client that pulls from `settings`' MLflow: {}
    when the environment names an identity (the client inherits it) or the server is not the
    local stack's; else the stack's read-only consumer, as the README tells applications to
    sign in. `Settings` fills in the stack's admin only for the stack's own URL and only when
    the environment names nobody, so that is when the consumer file applies."""
    if any(os.environ.get(k) for k in auth.IDENTITY_VARS):
        return {}
    admin = settings.mlflow_tracking_username
    if admin is None or not settings.mlflow_admin_file.is_file():
        return {}
    if admin != auth.ensure_identity(settings.mlflow_admin_file, auth.ADMIN_USER)[0]:
        return {}
    return auth.identity_env(settings.mlflow_consumer_file)


def pull_bench(uri: str | None = None, *, n: int = N_IMAGES, tracking_uri: str | None = None,
               python: str | None = None,
               identity: dict[str, str] | None = None) -> dict[str, Any]:
    """{"pull_10k_s", "pull_10k_warm_s", "pull_model", "pull_threads", "pull_python",
    "pull_identity"} measured in a fresh process; `uri`: a `models:/...` URI (needs
    `tracking_uri`) or a local model directory; `python`: the client's interpreter (e.g. a venv
    with only torch and mlflow; default this one); `identity`: MLFLOW_TRACKING_USERNAME/PASSWORD
    the client signs in with (`consumer_identity`), else the environment's."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    env |= identity or {}
    with tempfile.TemporaryDirectory(prefix="gan-pull-") as tmp:
        target = uri or str(default_model_dir(Path(tmp) / "model"))
        r = subprocess.run([python or sys.executable, "-c", _CLIENT, target, str(n)], cwd=tmp,
                           env=env,
                           capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"pulling {target!r} failed in a fresh process:\n{r.stderr[-2000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    times = out["times"]
    return {"pull_10k_s": times[0], "pull_10k_warm_s": statistics.median(times[1:]),
            "pull_10k_best_s": min(times),
            "pull_load_s": out["loads"][0], "pull_draw_s": times[0] - out["loads"][0],
            "pull_model": uri or "default preset, untrained (local model directory)",
            "pull_images": n, "pull_threads": out["threads"],
            "pull_python": python or sys.executable, "pull_call": PULL_CALL,
            "pull_identity": env.get("MLFLOW_TRACKING_USERNAME") if tracking_uri else None}
