"""Evaluation: score a trained generator honestly, write its report, decide promotion.

What this module is: the evaluation stage of the pipeline. `evaluate` loads the prepared
dataset and the checkpoint by URI, loads the judge that the data step built and checked for
the dataset version (`gan.eval.judge_ladder`, named by a `JudgeRef`; evaluation never trains
one), samples the generator with seeded latents, computes every metric next to its real-data floor
or ceiling, draws the pictures and writes `report.json`, `report.md` and the PNGs to
`s3://<bucket>/runs/<run_id>/eval/`. `evaluate_generator` does the same on in-memory objects
without storage. Every metric is measured on `EvalConfig.n_seeds` latent seeds and reported as
mean ± spread; the current champion, when the caller passes it (`Champion`, loaded through
`gan.registry` by the flow), is re-scored in the same evaluation — same judge, holdout, n and
seeds — so the gate (`gan.eval.gate`, re-exported here) compares like with like.

Reference sets: generated samples are compared with the *holdout* split (never seen by the
generator or the judge); the feature-space floors (FID, KID, P/R/D/C) put n real *train* images
in the generator's place, so a generator that reproduced its training data would score about
the floor. The class floors (class KL, classes covered) score the real *holdout* images as if
they were samples: the judge never trained on them, so they carry its own error, which the
gate's class rules then do not count against the generator.

What it is not: no MLflow (see `gan.registry.publish`), no training, no metric math
(`gan.eval.metrics`),
no judge internals (`gan.eval.judge`), no drawing code (`gan.eval.pictures`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from gan.core.config import EvalConfig
from gan.core.records import ChampionScore, DatasetRef, JudgeRef, Report, TrainedRef
from gan.data.prepare import PreparedData, load_prepared
from gan.eval import metrics as M
from gan.eval import pictures, stored
from gan.eval.gate import gate
from gan.eval.inception import Inception, InceptionFID, load_inception
from gan.eval.judge import Judge, JudgeError, check_judge, train_judge
from gan.eval.judge_ladder import MIN_HOLDOUT, load_judge
from gan.eval.report import render_markdown
from gan.eval.ssl_judge import AnyJudge, SSLJudge, check_ssl_judge
from gan.nets.models import sample_images
from gan.train.checkpoint import generator_from_checkpoint, load_checkpoint
from gan.train.loop import SATURATED_FAKE, SATURATED_REAL

if TYPE_CHECKING:
    from gan.io.storage import Storage

__all__ = [
    "Champion", "Judge", "JudgeError", "champion_problem", "compute_floors", "evaluate",
    "evaluate_generator", "gate", "get_or_compute_floors", "render_markdown", "train_judge",
]

PICTURE_FILES = {"samples": "samples.png", "real_vs_generated": "real_vs_generated.png",
                 "curves": "curves.png"}
GRID_SIDE = 10  # 10×10 sample grids
FLOORS_FORMAT = 2  # 2: class floors from the holdout images (1: from train images)


# --------------------------------------------------------------------------- sampling


def n_samples(cfg: EvalConfig, data: PreparedData) -> int:
    """`cfg.n_samples`, or max(holdout size, 1000) when unset."""
    return cfg.n_samples or max(len(data.x_holdout), 1000)


def proportional_labels(p_real: Tensor, n: int, seed: int) -> Tensor:
    """n labels in the real class proportions (largest remainder), in a seeded random order.

    Balanced on a balanced dataset; on an imbalanced one a perfect conditional generator then
    matches the real class distribution, so KL and FID do not punish it for the request.
    """
    raw = p_real.double() * n  # (K,)
    counts = raw.floor().long()
    short = n - int(counts.sum())
    counts[torch.argsort(raw - counts, descending=True)[:short]] += 1
    labels = torch.repeat_interleave(torch.arange(len(p_real)), counts)  # (n,)
    return labels[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]


def _checked(fake: Tensor, like: Tensor) -> tuple[Tensor, float]:
    """Shape check against the real images; non-finite pixels zeroed, values clamped to [-1, 1].

    Returns the cleaned samples and the share of samples that had a non-finite pixel.
    """
    if fake.shape[1:] != like.shape[1:]:
        raise ValueError(f"generator output {tuple(fake.shape[1:])} does not match the dataset's "
                         f"images {tuple(like.shape[1:])} (C, H, W)")
    bad = ~torch.isfinite(fake).flatten(1).all(1)  # (n,)
    return fake.nan_to_num(0.0, 0.0, 0.0).clamp(-1.0, 1.0), float(bad.float().mean())


# --------------------------------------------------------------------------- metrics


def sample_metrics(judge: AnyJudge, real: Tensor, fake: Tensor, seed: int) -> dict[str, float]:
    """FID, KID, P/R/D/C (and, with a classifier judge, its IS) of `fake` against `real`, in
    the judge's feature space."""
    feat = judge.feature_module()
    kid_mean, kid_std = M.kid(feat, real, fake, seed)
    out = {"fid": M.fid(feat, real, fake), "kid_mean": kid_mean, "kid_std": kid_std}
    if isinstance(judge, Judge):  # a label-free judge has no classes, hence no IS
        is_mean, is_std = M.inception_score(judge.logits_module(), fake, seed)
        out.update(inception_score=is_mean, inception_score_std=is_std)
    out.update(M.prdc_metrics(judge.features(real).numpy(), judge.features(fake).numpy()))
    return out


def floor_images(data: PreparedData, cfg: EvalConfig) -> Tensor:
    """The n real train images (seeded choice; n as generated where possible) that stand in
    for the generator in the floors: (n, C, H, W) float."""
    n_train = len(data.x_train)
    n = min(n_samples(cfg, data), n_train)
    idx = torch.randperm(n_train, generator=torch.Generator().manual_seed(cfg.seed))[:n]
    return data.x_train[idx].float()


def compute_floors(judge: AnyJudge, data: PreparedData, cfg: EvalConfig) -> dict[str, Any]:
    """Every metric's real-data value: FID, KID and P/R/D/C with n real train images in place
    of the generator (same n where possible), against the holdout; class KL and classes covered
    of the real holdout images scored as if they were samples (see the module docstring).

    Returns {"floors": {...}, "ceilings": {...}, "n": n_used, "seed": seed}: floors hold every
    metric's real-data value (FID/KID/KL are floors; P/R/D/C the values to approach), ceilings
    the classifier Inception Score of real data and the number of classes.
    """
    real_sub = floor_images(data, cfg)  # (n, C, H, W)
    n = len(real_sub)
    m = sample_metrics(judge, data.x_holdout.float(), real_sub, cfg.seed)
    floors = {k: m[k] for k in ("fid", "kid_mean", "kid_std", "precision", "recall", "density",
                                "coverage")}
    ceilings: dict[str, float] = {}
    if isinstance(judge, Judge):  # class statistics need the classifier judge
        # The holdout, not train images: on its own training images the judge errs less than
        # on images it never saw, which is what the generator's samples are to it.
        p_real = M.class_shares(data.y_train, data.num_classes)  # as the candidate's KL
        stats = M.class_stats(judge.predict(data.x_holdout.float()), p_real,
                              cfg.class_share_threshold)
        floors["class_kl"] = float(stats["class_kl"])  # type: ignore[arg-type]
        floors["classes_covered"] = float(stats["classes_covered"])  # type: ignore[arg-type]
        ceilings = {"inception_score": m["inception_score"],
                    "inception_score_std": m["inception_score_std"],
                    "classes_covered": float(data.num_classes)}
    return {"floors": floors, "ceilings": ceilings, "n": n, "seed": cfg.seed}


def get_or_compute_floors(storage: Storage, judge: AnyJudge, data: PreparedData,
                          cfg: EvalConfig, judge_uri: str) -> dict[str, Any]:
    """Floors cached beside the judge (`<judge_uri>/floors/n<n>-seed<seed>.json`).

    The cached document is reused only if it was computed by the same judge weights, the same
    class-share threshold and this FLOORS_FORMAT; otherwise it is recomputed and overwritten.
    """
    n = min(n_samples(cfg, data), len(data.x_train))
    uri = f"{judge_uri}/floors/n{n}-seed{cfg.seed}.json"
    key = {"judge_sha256": judge.meta.get("weights_sha256"),
           "class_share_threshold": cfg.class_share_threshold, "floors_format": FLOORS_FORMAT}
    if storage.exists(uri):
        doc = storage.get_json(uri)
        if all(doc.get(k) == v for k, v in key.items()):
            return doc
    doc = {**compute_floors(judge, data, cfg), **key}
    storage.put_json(uri, doc)
    return doc


# --------------------------------------------------------------------------- pictures


def _sorted_by(images: Tensor, labels: Tensor) -> Tensor:
    return images[torch.argsort(labels, stable=True)]


def make_pictures(generator: nn.Module, data: PreparedData, fake: Tensor, fake_classes: Tensor,
                  seed: int, history: list[dict[str, float]] | None) -> dict[str, bytes]:
    """samples.png (10×10; one row per class when conditional), real_vs_generated.png, curves.png.

    `fake_classes` (n,): requested labels (conditional G) or the judge's predictions, used to
    order the real-vs-generated halves by class so they read side by side.
    """
    side = GRID_SIDE
    if getattr(generator, "conditional", False):
        rows = min(data.num_classes, side)
        labels = torch.arange(rows).repeat_interleave(side)  # (rows·10,) row r = class r
        grid, _ = _checked(sample_images(generator, len(labels), seed + 1, labels), data.x_train)
    else:
        grid = fake[: side * side]
    k = min(side * side, len(data.x_holdout), len(fake))
    pick = torch.randperm(len(data.x_holdout), generator=torch.Generator().manual_seed(seed))[:k]
    real = _sorted_by(data.x_holdout[pick], data.y_holdout[pick])
    return {
        "samples": pictures.sample_grid_png(grid, ncol=side),
        "real_vs_generated": pictures.real_vs_generated_png(
            real, _sorted_by(fake[:k], fake_classes[:k]), ncol=side),
        "curves": pictures.curves_png(history or []),
    }


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Champion:
    """The current champion to re-score beside a candidate: its registry version and its
    generator (the caller loads it; gan.eval knows no registry)."""

    version: str
    generator: nn.Module | None
    problem: str = ""  # set when the caller could not load it: then it is not comparable


def champion_problem(generator: nn.Module | None, data: PreparedData) -> str:
    """'' when `generator` can be scored on `data`, else why not (a sentence fragment)."""
    if generator is None:
        return "no generator was loaded"
    want = tuple(data.x_train.shape[1:])
    shape = getattr(generator, "image_shape", None)
    if shape is not None and tuple(shape) != want:
        return f"it draws {tuple(shape)} images (C, H, W), the data has {want}"
    k = getattr(generator, "num_classes", None)
    if getattr(generator, "conditional", False) and k != data.num_classes:
        return f"it is conditional on {k} classes, the data has {data.num_classes}"
    return ""


@dataclass(frozen=True)
class CopyReference:
    """What the copy statistics compare samples with: the training features (N, F) and their
    k-means cells (made once per evaluation, shared by the candidate and the champion)."""

    train_feats: Tensor
    cells: M.CopyCells


def _score_seeds(generator: nn.Module, data: PreparedData, judge: AnyJudge, cfg: EvalConfig,
                 ref: CopyReference, seeds: list[int], inception: InceptionFID | None = None
                 ) -> tuple[list[dict[str, float]], Tensor, Tensor, Tensor | None]:
    """One metrics dict per latent seed (with `inception`, also `fid_inception`); also the
    judge's predictions pooled over seeds (S·n,; all 0 for a label-free judge) and the first
    seed's samples (n, C, H, W) and requested labels (for the pictures)."""
    n = n_samples(cfg, data)
    p_real = M.class_shares(data.y_train, data.num_classes)  # (K,)
    holdout = data.x_holdout.float()
    hold_feats = judge.features(holdout)  # (H, F)
    conditional = bool(getattr(generator, "conditional", False))
    per_seed, preds, first, first_labels = [], [], None, None
    for seed in seeds:
        labels = proportional_labels(p_real, n, seed) if conditional else None
        fake, nonfinite = _checked(sample_images(generator, n, seed, labels), data.x_train)
        m = sample_metrics(judge, holdout, fake, seed)
        m.update(M.copy_stats(ref.train_feats, hold_feats, judge.features(fake),
                              cells=ref.cells), nonfinite_fraction=nonfinite)
        if inception is not None:  # the standard FID: reported, never gated
            m["fid_inception"] = inception(fake)
        if isinstance(judge, Judge):
            predicted = judge.predict(fake)  # (n,)
            m["class_kl"] = M.class_kl(p_real, M.class_shares(predicted, data.num_classes))
        else:
            predicted = torch.zeros(n, dtype=torch.long)
        if labels is not None and isinstance(judge, Judge):
            m["conditional_accuracy"] = float((predicted == labels).float().mean())
        per_seed.append(m)
        preds.append(predicted)
        if first is None:
            first, first_labels = fake, labels
    assert first is not None
    return per_seed, torch.cat(preds), first, first_labels


def _aggregate(per_seed: list[dict[str, float]]
               ) -> tuple[dict[str, float], dict[str, float], dict[str, list[float]]]:
    """(means, spreads (sample std, 0 for one seed), values per seed) of each metric."""
    lists = {k: [float(d[k]) for d in per_seed] for k in per_seed[0]}
    means = {k: float(np.mean(v)) for k, v in lists.items()}
    spreads = {k: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 for k, v in lists.items()}
    return means, spreads, lists


def _score_champion(champion: Champion, data: PreparedData, judge: AnyJudge, cfg: EvalConfig,
                    ref: CopyReference, seeds: list[int]) -> ChampionScore:
    problem = champion.problem or champion_problem(champion.generator, data)
    if not problem:
        assert champion.generator is not None
        try:
            per_seed, predicted, _, _ = _score_seeds(champion.generator, data, judge, cfg,
                                                     ref, seeds)
        except ValueError as e:  # e.g. an output shape the checks above could not see
            problem = str(e)
    if problem:
        return ChampionScore(version=champion.version, comparable=False, reason=problem)
    means, spreads, lists = _aggregate(per_seed)
    if isinstance(judge, Judge):
        stats = M.class_stats(predicted, M.class_shares(data.y_train, data.num_classes),
                              cfg.class_share_threshold)  # pooled over seeds, as the candidate's
        means["classes_covered"] = float(stats["classes_covered"])  # type: ignore[arg-type]
    return ChampionScore(version=champion.version, metrics=means, spread=spreads,
                         per_seed=lists)


def evaluate_generator(
    generator: nn.Module, data: PreparedData, judge: AnyJudge, cfg: EvalConfig,
    history: list[dict[str, float]] | None = None, *, floors: dict[str, Any] | None = None,
    champion: Champion | None = None, inception: Inception | None = None,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Score `generator` on `data` with `judge`, on `cfg.n_seeds` latent seeds; no storage.

    Returns (result, pictures): result has the `Report` fields metrics (means over the seeds),
    spread, per_seed, eval_seeds, floors, ceilings, class_hist, classes_covered (pooled over
    the seeds), judge_accuracy, conditional_accuracy, n_samples, seeds and champion (the
    `champion` re-scored on the same seeds, or why it cannot be; None without one); pictures
    maps samples / real_vs_generated / curves to PNG bytes (first seed). `floors` (from
    `compute_floors` or its cache) is computed here when not given. `judge`: the classifier
    judge, or the label-free `SSLJudge` (then no class metrics; `judge` and `judge_quality`
    name it). Raises `JudgeError` when the judge fails its quality check. `inception` (from
    `load_inception`): also the standard FID `fid_inception` per seed against the holdout, its
    floor, and `inception` (the weights, images and seconds) in the result; the champion is
    not re-scored with it (it decides nothing).
    """
    if isinstance(judge, SSLJudge):
        check_ssl_judge(judge, cfg)
    else:
        check_judge(judge, cfg.min_judge_accuracy)
    if len(data.x_holdout) < MIN_HOLDOUT:
        raise ValueError(f"dataset {data.name!r} has {len(data.x_holdout)} holdout images; "
                         f"evaluation needs at least {MIN_HOLDOUT} (raise data.limit or "
                         "data.holdout_fraction)")
    if isinstance(judge, Judge) and judge.num_classes != data.num_classes:
        raise ValueError(f"judge has {judge.num_classes} classes, dataset {data.name!r} "
                         f"{data.num_classes}")
    seeds = [cfg.seed + i for i in range(cfg.n_seeds)]
    train_feats = judge.features(data.x_train.float())  # (N, F): the copy rule's reference
    inc = None if inception is None else InceptionFID(inception, data.x_holdout.float())
    ref = CopyReference(train_feats, M.copy_cells(train_feats, len(data.x_holdout),
                                                  seed=cfg.seed))
    per_seed, predicted, fake, labels = _score_seeds(generator, data, judge, cfg, ref,
                                                     seeds, inc)
    metrics, spread, lists = _aggregate(per_seed)
    stats: dict[str, Any] = {"class_hist": [], "classes_covered": 0}  # no classes: no labels
    if isinstance(judge, Judge):
        p_real = M.class_shares(data.y_train, data.num_classes)
        stats = M.class_stats(predicted, p_real, cfg.class_share_threshold)  # pooled over seeds
        metrics["classes_covered"] = float(stats["classes_covered"])
    metrics["judge_accuracy"] = judge.accuracy
    fl = floors or compute_floors(judge, data, cfg)
    fl_values = dict(fl["floors"])
    if inc is not None:
        fl_values["fid_inception"] = inc(floor_images(data, cfg))
    result = {
        "metrics": metrics, "spread": spread, "per_seed": lists, "eval_seeds": seeds,
        "floors": fl_values, "ceilings": fl["ceilings"],
        "class_hist": stats["class_hist"], "classes_covered": stats["classes_covered"],
        "judge_accuracy": judge.accuracy, "judge": judge.kind, "judge_quality": judge.quality,
        "conditional_accuracy": metrics.get("conditional_accuracy"), "n_samples": len(fake),
        "seeds": {"eval": cfg.seed, "judge": judge.seed},
        "champion": (None if champion is None else
                     _score_champion(champion, data, judge, cfg, ref, seeds)),
        "inception": None if inc is None else {**inception.describe(), **inc.cost()},
    }
    n = len(fake)
    pics = make_pictures(generator, data, fake,
                         labels if labels is not None else predicted[:n], cfg.seed, history)
    return result, pics


def divergence_evidence(generator: nn.Module, history: list[dict[str, float]] | None,
                        train_cfg: dict[str, Any]) -> str | None:
    """Why the generator counts as diverged, or None: non-finite weights, or a last epoch whose
    mean D outputs are saturated (the training guard's thresholds; not for WGAN-GP, whose
    critic is unbounded). The guard stops a run only after `divergence_patience` consecutive
    saturated steps, more than a short run has, so a diverged run could reach the gate."""
    for name, p in generator.state_dict().items():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            return f"the generator has non-finite weights ({name})"
    loss = train_cfg.get("loss")
    if not history or loss == "wgan-gp":
        return None
    last = history[-1]
    d_real, d_fake = last.get("d_real"), last.get("d_fake")
    if d_real is None or d_fake is None:
        return None
    real_thr = (min(SATURATED_REAL, float(train_cfg.get("real_label", 1.0)) - 0.05)
                if loss == "bce" else SATURATED_REAL)
    if not (d_real <= real_thr or d_fake >= SATURATED_FAKE):  # saturated, or NaN
        return (f"D saturated in the last epoch ({last.get('epoch', len(history))}): mean "
                f"σ(D(x)) {d_real:.4g} > {real_thr:g} and σ(D(G(z))) {d_fake:.4g} < "
                f"{SATURATED_FAKE}")
    return None


def evaluate(storage: Storage, dataset: DatasetRef, trained: TrainedRef,
             cfg: EvalConfig, *, judge_ref: JudgeRef,
             champion: Champion | None = None) -> Report:
    """The evaluation stage: URIs in, report and pictures under `runs/<run_id>/eval/` out
    (`eval/epoch_<N>/` for a run that continued from a checkpoint). Written once: evaluating
    the same checkpoint again writes the next numbered prefix (`eval/2/`, ...), so the report a
    registry decision was made on stays as it was (`gan.eval.stored`).

    `judge_ref`: the judge the data step built and checked (`judge_ladder.prepare_judge`),
    loaded as it is. `champion`: the current champion's generator, re-scored in this
    evaluation (see module)."""
    for what, version in (("trained on", trained.dataset_version),
                          ("judged by a judge of", judge_ref.dataset_version)):
        if version != dataset.version:
            raise ValueError(f"run {trained.run_id!r} was {what} dataset version {version!r}, "
                             f"asked to evaluate on {dataset.version!r}")
    # First: a bad weight file fails now, naming the file and the knob (the flow checks it
    # earlier still, in the data step).
    inception = load_inception(cfg.inception_weights, storage) if cfg.inception_weights else None
    data = load_prepared(storage, dataset)
    ckpt = load_checkpoint(storage.get_bytes(trained.checkpoint_uri))
    t0 = time.perf_counter()  # compute from here (the judge and cached floors: small reads)
    judge = load_judge(storage, judge_ref)
    floors = get_or_compute_floors(storage, judge, data, cfg, judge_ref.uri)
    generator = generator_from_checkpoint(ckpt, use_ema=True)
    history = ckpt.get("history") or trained.history
    result, pics = evaluate_generator(generator, data, judge, cfg, history, floors=floors,
                                      champion=champion, inception=inception)
    result["compute_s"] = round(time.perf_counter() - t0, 3)
    result["judge_ref"] = judge_ref

    prefix = stored.next_prefix(storage, trained)
    artifacts = {name: f"{prefix}/{PICTURE_FILES[name]}" for name in pics}
    train_seed = trained.train_cfg.get("seed")
    if isinstance(train_seed, int):
        result["seeds"] = {**result["seeds"], "train": train_seed}
    why = (trained.divergence_reason or "reported by training" if trained.diverged
           else divergence_evidence(generator, history, trained.train_cfg))
    report = Report(run_id=trained.run_id, dataset_version=dataset.version,
                    diverged=why is not None, divergence_reason=why,
                    report_uri=f"{prefix}/{stored.REPORT_FILE}",
                    markdown_uri=f"{prefix}/{stored.MARKDOWN_FILE}", artifacts=artifacts,
                    **result)
    report = report.model_copy(update={"markdown": render_markdown(report)})
    for name, png in pics.items():
        storage.put_bytes(artifacts[name], png, "image/png")
    storage.put_bytes(report.markdown_uri, report.markdown.encode(), "text/markdown")
    # report.json last: its presence means the evaluation is complete.
    storage.put_json(report.report_uri, report.model_dump(mode="json", exclude={"markdown"}))
    return report
