"""The recipe table's data and its two judges: the pipeline's judge and an independent reference.

What this module is: what `gan.tools.recipes` needs beyond training —
  - `load_data(kind)`: the bundled `digits`, `shapes` and `stacked` (the `stacked-digits`
    source, unlabelled) sets prepared as the pipeline prepares them, and `painted` (the judge
    issue's colour set: `gan.data.painted`, the run's half of
    the glyphs, 1,800 images, 32 px, labelled, split as the judge study splits it);
  - `ladder_judge`: the judge a run of the pipeline would get for that data (the judge ladder,
    `gan.eval.judge_ladder.build_judge`: the classifier judge where it passes its check, else
    the label-free one), cached under `<out>/judges/`;
  - `reference_judge_for`: the independent reference of the judge validation (a classifier
    judge trained on ten times more labelled images than the run sees: the painted digits of
    the other half of the glyphs, shapes of another seed; for digits no more images exist, so
    it is trained on all 1,797 and has seen the holdout — said in its note), cached under
    `<out>/reference/`;
  - `nyquist_scores`: the checkerboard measure (`gan.eval.spectrum.nyquist_ratio`) of a
    generator's samples beside the real holdout's;
  - `reference_scores`: a generator's FID under the reference against the holdout, its
    real-data floor (real train images in place of samples) and their ratio, mean over the
    evaluation's seeds: the "× floor" figure of the recipe issue.

What it is not: no training of generators, no tables (`gan.tools.recipes`,
`gan.tools.recipe_tables`).
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gan.core.config import DataConfig, EvalConfig
from gan.data.prepare import PreparedData, prepare_arrays
from gan.data.shapes import SIZE as SHAPES_SIZE
from gan.data.shapes import render_shapes, write_shapes
from gan.eval import judge as J
from gan.eval import validation as V
from gan.eval.evaluate import floor_images, n_samples
from gan.eval.judge_ladder import build_judge, cache_key
from gan.eval.spectrum import nyquist_ratio
from gan.nets.models import sample_images

DATA_KINDS = ("digits", "shapes", "painted", "stacked")
SHAPES_PER_CLASS = 750  # 3,000 images: 2,400 train, 600 held out (the default 0.2 split)
SHAPES_SEED = 0
PAINTED_IMAGES = 1800  # the judge issue's colour folder size (run's half of the glyphs)
REFERENCE_FACTOR = 10  # the reference sees this many times more labelled images
REFERENCE_EPOCHS = 12  # as the judge study's reference (gan.tools.judge_study.Sizes)
Log = Callable[[str], None]


def load_data(kind: str, *, limit: int | None = None,
              shapes_per_class: int = SHAPES_PER_CLASS) -> PreparedData:
    """The `kind` set prepared as described in the module docstring; `limit` keeps a
    stratified subset (smoke runs) of digits and shapes, and caps painted's count."""
    if kind == "digits":
        return prepare_arrays(DataConfig(limit=limit))
    if kind == "stacked":  # unlabelled: judged by the label-free judge, plus the mode figures
        return prepare_arrays(DataConfig(source="stacked-digits", limit=limit))
    if kind == "painted":
        from gan.data.painted import render_painted

        n = min(limit or PAINTED_IMAGES, PAINTED_IMAGES)
        return V.prepared_from_arrays(*render_painted(n, seed=0, part="run"), name="painted")
    if kind != "shapes":
        raise ValueError(f"unknown data {kind!r}; choose from {list(DATA_KINDS)}")
    with tempfile.TemporaryDirectory(prefix="gan-shapes-") as tmp:
        write_shapes(tmp, shapes_per_class, SHAPES_SEED)  # <tmp>/<class>/<class>-<i>.png
        cfg = DataConfig(source="images", uri=tmp, name="shapes", image_size=SHAPES_SIZE,
                         limit=limit)
        return prepare_arrays(cfg)


def ladder_judge(data: PreparedData, cfg: EvalConfig, out_dir: Path, log: Log = print) -> Any:
    """The judge the pipeline's ladder picks for `data` under `cfg`, cached in
    `<out_dir>/judges/<kind>-<key>/`; JudgeError when no rung passes its check."""
    def files_of(settings: dict[str, Any]) -> J.FolderFiles:
        return J.FolderFiles(out_dir / "judges" / f"{settings['kind']}-{cache_key(settings)}")

    judge, ref = build_judge(files_of, data, cfg, log)
    judge.meta["ladder"] = {"kind": ref.kind, "reason": ref.reason,
                            "passed_over": ref.passed_over, "quality": ref.quality}
    return judge


def _reference_images(kind: str, data: PreparedData) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(x (R, C, H, W), y (R,), note): the reference's labelled training images."""
    n = len(data.x_train) + len(data.x_holdout)
    if kind == "painted":
        from gan.data.painted import render_painted

        ref = V.prepared_from_arrays(*render_painted(n * REFERENCE_FACTOR, seed=0,
                                                     part="reference"),
                                     name="painted-reference", holdout_fraction=0.01)
        return ref.x_train, ref.y_train, (f"{len(ref.x_train):,} painted images of the other "
                                          "half of the glyphs (never in a run)")
    if kind == "shapes":
        per_class = n * REFERENCE_FACTOR // data.num_classes
        ref = V.prepared_from_arrays(*render_shapes(per_class, seed=1), name="shapes-reference",
                                     holdout_fraction=0.01)
        return ref.x_train, ref.y_train, f"{len(ref.x_train):,} shapes of another seed"
    if kind == "digits":
        return (torch.cat([data.x_train, data.x_holdout]),
                torch.cat([data.y_train, data.y_holdout]),
                "all 1,797 digits: no more exist, so it has seen the holdout")
    raise ValueError(f"no reference for data {kind!r}; choose from {list(DATA_KINDS)}")


def reference_judge_for(kind: str, data: PreparedData, out_dir: Path,
                        log: Log = print) -> J.Judge:
    """The reference classifier of `kind` (module docstring), its accuracy measured on the
    run's holdout, cached in `<out_dir>/reference/`."""
    x, y, note = _reference_images(kind, data)
    ref_data = PreparedData(x_train=x, y_train=y.long(), x_holdout=data.x_holdout,
                            y_holdout=data.y_holdout, num_classes=data.num_classes,
                            name=f"{data.name}-reference", version=f"{data.version}-reference")
    judge = J.cached_judge(J.FolderFiles(out_dir / "reference"), ref_data,
                           epochs=REFERENCE_EPOCHS, min_accuracy=0.0, seed=0, same_epochs=True,
                           log=log)
    judge.meta["note"] = note
    log(f"reference judge: accuracy {judge.accuracy:.4f} on the run's holdout ({note})")
    return judge


def reference_scores(generator: nn.Module, data: PreparedData, reference: J.Judge,
                     cfg: EvalConfig) -> dict[str, Any]:
    """{"fid", "fid_sd", "floor", "ratio", "accuracy", "cond_acc"}: FID of the generator's
    samples under the reference against the holdout, mean (and sd) over `cfg.n_seeds` latent
    seeds, the real-data floor (`floor_images` in place of samples), fid / floor, the
    reference's own accuracy and, for a conditional G, the share of samples the reference
    reads as the class they were drawn for (None for an unconditional G)."""
    holdout = data.x_holdout.float()
    conditional = bool(getattr(generator, "conditional", False))
    shares = torch.bincount(data.y_train, minlength=data.num_classes).double()
    n = n_samples(cfg, data)
    real_feats = reference.features(holdout)
    fids, hits = [], []
    for i in range(cfg.n_seeds):
        seed = cfg.seed + i
        labels = (torch.multinomial(shares / shares.sum(), n, replacement=True,
                                    generator=torch.Generator().manual_seed(seed + 7919))
                  if conditional else None)  # (n,) drawn with the real class shares
        fake = sample_images(generator, n, seed, labels).clamp(-1.0, 1.0)  # (n, C, H, W)
        fids.append(V.fid_of_features(real_feats, reference.features(fake)))
        if labels is not None:
            hits.append(float((reference.predict(fake) == labels).float().mean()))
    floor = V.fid_of_features(real_feats, reference.features(floor_images(data, cfg)))
    mean = statistics.fmean(fids)
    return {"fid": round(mean, 4), "fid_sd": round(statistics.stdev(fids), 4),
            "floor": round(floor, 4), "ratio": round(mean / max(floor, 1e-9), 2),
            "accuracy": round(float(reference.accuracy), 4),
            "cond_acc": round(statistics.fmean(hits), 4) if hits else None}


def nyquist_scores(generator: nn.Module, data: PreparedData, *, n: int = 512,
                   seed: int = 0) -> dict[str, float]:
    """{"samples", "real"}: `nyquist_ratio` of n samples (classes in turn for a conditional
    G) and of the real holdout; well above the real figure means a checkerboard."""
    labels = (torch.arange(n) % data.num_classes
              if getattr(generator, "conditional", False) else None)  # (n,)
    fake = sample_images(generator, n, seed, labels).clamp(-1.0, 1.0)  # (n, C, H, W)
    h, w = fake.shape[-2:]
    if h % 2 or w % 2:
        return {}
    return {"samples": round(nyquist_ratio(fake), 3),
            "real": round(nyquist_ratio(data.x_holdout.float()), 3)}
