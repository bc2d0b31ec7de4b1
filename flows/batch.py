"""Batch jobs on a published generator, as Prefect flows: anomaly scores, inpainting, samples.

What this module is: three flows, each a few tasks that are thin calls into one `gan` function:

    score_anomalies(model_uri, input_uri, output_uri)   gan.apps.anomaly.score_file per input .npz
        input_uri: one .npz, or an s3:// prefix whose .npz files are scored one by one
        output_uri: a .csv (one input) or a prefix: <prefix>/<input stem>.scores.csv
    inpaint_batch(model_uri, input_uri, output_uri, mask)   gan.apps.inpaint.inpaint_file per .npz
        outputs <prefix>/<input stem>.inpainted.npz (x filled, known mask, y)
    augment_dataset(model_uri, n_per_class, output_uri)   n labelled samples per class → .npz

Listing and writing go through object storage and are retried on `StorageError`; the search
itself is not retried (a bad input fails the same way twice). Task results are not persisted:
each task writes its output to the URI it returns.

What it is not: no tensor math, no storage layout beyond output names (all in `gan.*`).
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.retrain import retry_on_storage_error
from gan.apps import anomaly, inpaint
from gan.apps import inputs as app_inputs
from gan.apps.augment import labelled_samples
from gan.apps.latent_search import SearchConfig
from gan.core.settings import Settings
from gan.io.storage import Storage
from gan.io.uri import storage_for
from gan.registry.load import load_generator

IO_RETRIES: dict[str, Any] = {"retries": 3, "retry_delay_seconds": [2, 5, 10],
                              "retry_condition_fn": retry_on_storage_error}


@task(name="list_inputs", cache_policy=NO_CACHE, persist_result=False, **IO_RETRIES)
def list_inputs(settings: Settings, input_uri: str) -> list[str]:
    """One .npz URI, or every .npz under an s3:// prefix (sorted)."""
    if input_uri.endswith(".npz"):
        return [input_uri]
    if not input_uri.startswith("s3://"):
        raise ValueError(f"input {input_uri!r}: give an .npz file or an s3:// prefix")
    keys = Storage.from_settings(settings).list_keys(input_uri.rstrip("/") + "/")
    found = [k for k in keys if k.endswith(".npz")]
    if not found:
        raise ValueError(f"input {input_uri!r}: no .npz files under this prefix")
    return found


def output_for(output_uri: str, input_uri: str, suffix: str, n_inputs: int) -> str:
    """`output_uri` itself when it names a file for a single input, else
    `<output_uri>/<input stem><suffix>`."""
    if n_inputs == 1 and output_uri.endswith(PurePosixPath(suffix).suffix):
        return output_uri
    stem = PurePosixPath(input_uri).name.removesuffix(".npz")
    return f"{output_uri.rstrip('/')}/{stem}{suffix}"


@task(name="score_file", task_run_name="score {input_uri}", cache_policy=NO_CACHE,
      persist_result=False, **IO_RETRIES)
def score_file(settings: Settings, model_uri: str, input_uri: str, output_uri: str,
               search: SearchConfig, lam: float, device: str) -> dict[str, Any]:
    return anomaly.score_file(model_uri, input_uri, output_uri, settings=settings, cfg=search,
                              lam=lam, device=device)


@task(name="inpaint_file", task_run_name="inpaint {input_uri}", cache_policy=NO_CACHE,
      persist_result=False, **IO_RETRIES)
def inpaint_file(settings: Settings, model_uri: str, input_uri: str, output_uri: str,
                 mask: str, search: SearchConfig, device: str) -> dict[str, Any]:
    return inpaint.inpaint_file(model_uri, input_uri, mask, out_png=None, out_npz=output_uri,
                                settings=settings, cfg=search, device=device)


@task(name="sample_dataset", cache_policy=NO_CACHE, persist_result=False, **IO_RETRIES)
def sample_dataset(settings: Settings, model_uri: str, n_per_class: int, output_uri: str,
                   seed: int, device: str) -> dict[str, Any]:
    G = load_generator(model_uri, settings=settings, device=device)
    x, y = labelled_samples(G, n_per_class, seed=seed)
    data = app_inputs.npz_bytes(x=x.numpy(), y=y.numpy())
    storage = storage_for(settings, output_uri)
    written = app_inputs.write_output(output_uri, data, storage)
    return {"model": model_uri, "written": written, "n": len(y), "n_per_class": n_per_class}


# --------------------------------------------------------------------------- flows


@flow(name="score_anomalies", persist_result=False,
      description="AnoGAN anomaly scores of .npz image batches (file or s3:// prefix) with a "
      "published generator; one scores CSV per input.")
def score_anomalies(model_uri: str, input_uri: str, output_uri: str, steps: int = 100,
                    lr: float = 0.1, restarts: int = 1, lam: float = 0.1,
                    device: str = "cpu") -> list[dict[str, Any]]:
    """Score every input .npz; returns one summary (with the CSV's URI) per input."""
    search = SearchConfig(steps=steps, lr=lr, restarts=restarts)  # validated before any work
    settings = Settings.load()
    inputs = list_inputs(settings, input_uri)
    out = [score_file(settings, model_uri, u, output_for(output_uri, u, ".scores.csv",
                                                         len(inputs)), search, lam, device)
           for u in inputs]
    get_run_logger().info("scored %d file(s): %s", len(out), [o["written"] for o in out])
    return out


@flow(name="inpaint_batch", persist_result=False,
      description="Inpaint .npz image batches with a published generator.")
def inpaint_batch(model_uri: str, input_uri: str, output_uri: str, mask: str = "center",
                  steps: int = 100, lr: float = 0.1, device: str = "cpu"
                  ) -> list[dict[str, Any]]:
    """Fill `mask` (center | boxes | mask file URI) in every input .npz."""
    search = SearchConfig(steps=steps, lr=lr)
    settings = Settings.load()
    inputs = list_inputs(settings, input_uri)
    return [inpaint_file(settings, model_uri, u,
                         output_for(output_uri, u, ".inpainted.npz", len(inputs)), mask,
                         search, device) for u in inputs]


@flow(name="augment_dataset", persist_result=False,
      description="Write n labelled samples per class of a conditional generator as .npz.")
def augment_dataset(model_uri: str, n_per_class: int, output_uri: str, seed: int = 0,
                    device: str = "cpu") -> dict[str, Any]:
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    return sample_dataset(Settings.load(), model_uri, n_per_class, output_uri, seed, device)
