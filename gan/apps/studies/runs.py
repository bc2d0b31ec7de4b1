"""The three application evaluations as reproducible runs with markdown tables.

What this module is: one runner per table, each a small plan (full or `quick`) around the
evaluation functions of `gan.apps.augment`, `gan.apps.studies.anomaly_eval` and
`gan.apps.inpaint`; `gan augment-eval`,
`gan anomaly-eval` and `gan inpaint-eval` call them. Each returns a JSON-able dict with the
settings, the numbers and a markdown `table`.

    run_augment(model_uri)   holdout accuracy of the judge: real subset vs + generated (seeds)
    run_anomaly([model_uri]) one-class AUROC per digit: AnoGAN vs PCA / kNN (a GAN per class,
                             or the published conditional G searched with the normal label)
    run_inpaint(model_uri)   MSE / PSNR on the hole and judge accuracy: GAN vs mean vs NN fill

The data is the bundled digits with the pipeline's default split (`DataConfig()`), so a
generator retrained by the default flow never saw the holdout images used here; the runners
report the generator's dataset version next to the one evaluated on.

What it is not: no printing (callbacks), no new metric code.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from gan.apps import inputs as app_inputs
from gan.apps.augment import evaluate_augmentation
from gan.apps.fanogan import EncoderConfig
from gan.apps.inpaint import evaluate_inpainting
from gan.apps.latent_search import Progress, SearchConfig
from gan.apps.studies.anomaly_eval import (
    OneClassResult,
    evaluate_conditional,
    evaluate_one_class,
    one_class_recipe,
)
from gan.core.config import DataConfig
from gan.core.settings import Settings
from gan.core.tables import markdown_table
from gan.data.prepare import PreparedData, prepare_arrays
from gan.eval.judge import train_judge
from gan.registry import load as registry_load
from gan.registry import model_format as mlflow_model
from gan.registry.load import load_discriminator, load_generator

Echo = Callable[[str], None]


def _noop(_: str) -> None:
    return None


def model_meta(uri: str, settings: Settings | None) -> dict[str, Any]:
    """The bundle's `model_config.json` (dataset version, epochs, ...) of a model URI."""
    with tempfile.TemporaryDirectory(prefix="gan-meta-") as tmp:
        bundle = registry_load.download_model(uri, tmp, settings=settings)
        return mlflow_model.read_bundle_meta(bundle)


def _data_note(meta: dict[str, Any], data: PreparedData) -> str:
    got = meta.get("dataset_version", "")
    if got == data.version:
        return f"generator trained on dataset version {got} (same split: holdout unseen)"
    return (f"generator trained on dataset version {got or 'unknown'}, evaluated on "
            f"{data.version}: its training data may include these holdout images")


def _pm(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


# --------------------------------------------------------------------------- augmentation


def run_augment(model_uri: str, *, settings: Settings | None = None, quick: bool = False,
                seeds: list[int] | None = None, k_per_class: int | None = None,
                fraction: float = 0.1, device: str = "cpu", echo: Echo = _noop
                ) -> dict[str, Any]:
    """Table (1): does adding generated samples to a 10 % real subset help the classifier?"""
    data = prepare_arrays(DataConfig())
    G = load_generator(model_uri, settings=settings, device=device)
    meta = model_meta(model_uri, settings)
    seeds = seeds or ([0, 1, 2] if quick else [0, 1, 2, 3, 4])
    k = k_per_class or (50 if quick else 100)
    arms = ("real", "real+gen") if quick else ("real", "real+gen", "gen", "full")
    res = evaluate_augmentation(
        data, G, fraction=fraction, k_per_class=k, seeds=seeds,
        judge_epochs=5 if quick else 15, arms=arms,
        on_run=lambda s, a, acc: echo(f"seed {s} {a}: holdout accuracy {acc:.4f}"))
    summ = res.summary()
    table = markdown_table(
        ["training set", "images", "judge epochs", "holdout accuracy (mean ± std)", "min", "max"],
        [[arm, res.n_train[arm], res.epochs[arm], _pm(summ[arm]["mean"], summ[arm]["std"]),
          f"{summ[arm]['min']:.4f}", f"{summ[arm]['max']:.4f}"] for arm in arms])
    gain = [b - a for a, b in zip(res.accuracy["real"], res.accuracy["real+gen"], strict=True)]
    return {"model": model_uri, "quick": quick, "data_note": _data_note(meta, data),
            "settings": res.settings, "seeds": res.seeds, "accuracy": res.accuracy,
            "summary": summ, "gain_per_seed": gain, "table": table}


# --------------------------------------------------------------------------- anomaly


def run_anomaly(model_uri: str | None = None, *, settings: Settings | None = None,
                quick: bool = False, classes: list[int] | None = None,
                epochs: int | None = None, steps: int | None = None,
                test_limit: int | None = None, encoder_epochs: int | None = None,
                device: str = "cpu", echo: Echo = _noop,
                progress: Progress | None = None) -> dict[str, Any]:
    """Table (2): one-class AUROC per digit, AnoGAN (and f-AnoGAN) vs PCA and kNN baselines.

    Without `model_uri`: the protocol, one GAN trained per normal class. With it: the published
    conditional generator, searched with the normal class as label (no training).
    `encoder_epochs`: f-AnoGAN encoder epochs (None: 10 quick, 40 full; 0: no encoder)."""
    data = prepare_arrays(DataConfig())
    classes = classes if classes is not None else ([0, 1, 7] if quick else list(range(10)))
    cfg = SearchConfig(steps=steps or (50 if quick else 100))
    limit = test_limit or (120 if quick else None)
    n_enc = encoder_epochs if encoder_epochs is not None else (10 if quick else 40)
    enc_cfg = EncoderConfig(epochs=n_enc) if n_enc else None

    def on_class(r: OneClassResult) -> None:
        echo(" ".join(f"{k}={v}" for k, v in r.row().items()))

    out: dict[str, Any] = {"quick": quick, "classes": classes, "search": cfg.model_dump(),
                           "test_limit": limit,
                           "encoder": None if enc_cfg is None else enc_cfg.model_dump()}
    if model_uri is None:
        recipe = one_class_recipe(epochs or (20 if quick else 60))
        results = evaluate_one_class(data, classes, recipe=recipe, cfg=cfg, test_limit=limit,
                                     device=device, encoder_cfg=enc_cfg, progress=progress,
                                     on_class=on_class)
        out["recipe"] = {"model": recipe[0].model_dump(mode="json"),
                         "train": recipe[1].model_dump(mode="json")}
        gan_col = "AnoGAN (GAN per class)"
    else:
        G = load_generator(model_uri, settings=settings, device=device)
        D = load_discriminator(model_uri, settings=settings, device=device)
        out["model"] = model_uri
        out["data_note"] = _data_note(model_meta(model_uri, settings), data)
        echo("training the f-AnoGAN encoder ..." if enc_cfg else "no f-AnoGAN encoder")
        results = evaluate_conditional(data, G, D, classes, cfg=cfg, test_limit=limit,
                                       encoder_cfg=enc_cfg, progress=progress,
                                       on_class=on_class)
        gan_col = "AnoGAN (G(·, c))"
    methods = ["anogan", "residual"] + (["fanogan"] if enc_cfg else []) + ["pca", "knn"]
    names = {"anogan": gan_col, "residual": "residual only", "fanogan": "f-AnoGAN (encoder)",
             "pca": "PCA recon.", "knn": "kNN (k=1)"}
    rows = [[r.normal, f"{len(r.split.x_test)} ({int(r.split.is_anomaly.sum())})",
             *(f"{r.auroc[m]:.4f}" for m in methods), max(methods, key=lambda m: r.auroc[m])]
            for r in results]
    means = {m: float(np.mean([r.auroc[m] for r in results])) for m in methods}
    rows.append(["mean", "", *(f"{means[m]:.4f}" for m in methods), ""])
    table = markdown_table(["normal digit", "test images (anomalous)",
                            *(names[m] for m in methods), "best"], rows)
    return out | {"rows": [r.row() for r in results], "mean_auroc": means, "table": table}


# --------------------------------------------------------------------------- inpainting


def run_inpaint(model_uri: str, *, settings: Settings | None = None, quick: bool = False,
                mask: str = "center", n: int | None = None, steps: int | None = None,
                device: str = "cpu", echo: Echo = _noop, progress: Progress | None = None
                ) -> dict[str, Any]:
    """Table (3): GAN fill vs mean fill vs nearest-neighbour fill on holdout images."""
    data = prepare_arrays(DataConfig())
    G = load_generator(model_uri, settings=settings, device=device)
    D = load_discriminator(model_uri, settings=settings, device=device)
    meta = model_meta(model_uri, settings)
    n = n or (60 if quick else len(data.y_holdout))
    idx = _stratified(data.y_holdout, n)
    _, h, w = G.image_shape
    known = app_inputs.make_mask(mask, len(idx), h, w, seed=0)
    echo("training the judge on the full train split ...")
    judge = train_judge(data, 5 if quick else 15, seed=0)
    echo(f"judge holdout accuracy {judge.accuracy:.4f}")
    cfg = SearchConfig(steps=steps or (50 if quick else 100))
    ev = evaluate_inpainting(G, D, data, judge, known, holdout_idx=idx, cfg=cfg,
                             progress=progress)
    rows = []
    for name, r in ev.rows.items():
        psnr = "—" if math.isinf(r["psnr"]) else f"{r['psnr']:.2f}"
        mse = "—" if name == "original" else f"{r['mse']:.4f}"
        rows.append([name, mse, psnr, f"{r['judge_accuracy']:.4f}"])
    table = markdown_table(
        ["fill", "MSE on hole ([0,1] scale)", "PSNR on hole (dB)", "judge accuracy"], rows)
    return {"model": model_uri, "quick": quick, "mask": mask, "n_images": len(idx),
            "missing_share": float(1 - known.mean()), "data_note": _data_note(meta, data),
            "judge_accuracy_holdout": judge.accuracy, "search": cfg.model_dump(),
            "rows": ev.rows, "search_history": [ev.history[0], ev.history[-1]],
            "table": table}


def _stratified(y: torch.Tensor, n: int) -> np.ndarray:
    """n holdout indices, stratified and seeded (all of them when n >= len(y))."""
    if n >= len(y):
        return np.arange(len(y))
    keep, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y.numpy(),
                               random_state=0)
    return np.sort(keep)
