"""Evaluation: score a trained generator honestly, write its report, decide promotion.

What this module is: the evaluation stage of the pipeline. `evaluate` loads the prepared
dataset and the checkpoint by URI, gets the judge of the dataset version from its cache,
samples the generator with seeded latents, computes every metric next to its real-data floor
or ceiling, draws the pictures and writes `report.json`, `report.md` and the PNGs to
`s3://<bucket>/runs/<run_id>/eval/`. `evaluate_generator` does the same on in-memory objects
without storage. `gate` is the pure promotion rule.

Reference sets: generated samples are compared with the *holdout* split (never seen by the
generator or the judge); the floors put n real *train* images in the generator's place, so a
generator that reproduced its training data would score about the floor.

What it is not: no MLflow (see `gan.registry.publish`), no training, no metric math
(`gan.eval.metrics`),
no judge internals (`gan.eval.judge`), no drawing code (`gan.eval.pictures`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from gan.core.config import EvalConfig, GateConfig
from gan.core.records import DatasetRef, GateDecision, Report, TrainedRef
from gan.core.tables import fmt_number, markdown_table
from gan.data.prepare import PreparedData, load_prepared
from gan.eval import metrics as M
from gan.eval import pictures
from gan.eval.judge import (
    Judge,
    JudgeError,
    check_judge,
    get_or_train_judge,
    judge_prefix,
    train_judge,
)
from gan.nets.models import sample_images
from gan.train.checkpoint import generator_from_checkpoint, load_checkpoint

if TYPE_CHECKING:
    from gan.io.storage import Storage

__all__ = [
    "Judge", "JudgeError", "compute_floors", "evaluate", "evaluate_generator", "gate",
    "get_or_compute_floors", "get_or_train_judge", "render_markdown", "train_judge",
]

PICTURE_FILES = {"samples": "samples.png", "real_vs_generated": "real_vs_generated.png",
                 "curves": "curves.png"}
GRID_SIDE = 10  # 10×10 sample grids
MIN_HOLDOUT = 10  # PRDC needs more than k=5 neighbours, KID two subsets of two


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


def sample_metrics(judge: Judge, real: Tensor, fake: Tensor, seed: int) -> dict[str, float]:
    """FID, KID, P/R/D/C and classifier IS of `fake` against `real`, in the judge's space."""
    feat = judge.feature_module()
    kid_mean, kid_std = M.kid(feat, real, fake, seed)
    is_mean, is_std = M.inception_score(judge.logits_module(), fake, seed)
    out = {"fid": M.fid(feat, real, fake), "kid_mean": kid_mean, "kid_std": kid_std,
           "inception_score": is_mean, "inception_score_std": is_std}
    out.update(M.prdc_metrics(judge.features(real).numpy(), judge.features(fake).numpy()))
    return out


def compute_floors(judge: Judge, data: PreparedData, cfg: EvalConfig) -> dict[str, Any]:
    """The metrics with n real train images in place of the generator (same n where possible).

    Returns {"floors": {...}, "ceilings": {...}, "n": n_used, "seed": seed}: floors hold every
    metric's real-data value (FID/KID/KL are floors; P/R/D/C the values to approach), ceilings
    the classifier Inception Score of real data and the number of classes.
    """
    n_train = len(data.x_train)
    n = min(n_samples(cfg, data), n_train)
    idx = torch.randperm(n_train, generator=torch.Generator().manual_seed(cfg.seed))[:n]
    real_sub = data.x_train[idx].float()  # (n, C, H, W)
    m = sample_metrics(judge, data.x_holdout.float(), real_sub, cfg.seed)
    p_real = M.class_shares(data.y_train, data.num_classes)
    stats = M.class_stats(judge.predict(real_sub), p_real, cfg.class_share_threshold)
    floors = {k: m[k] for k in ("fid", "kid_mean", "kid_std", "precision", "recall", "density",
                                "coverage")}
    floors["class_kl"] = float(stats["class_kl"])  # type: ignore[arg-type]
    floors["classes_covered"] = float(stats["classes_covered"])  # type: ignore[arg-type]
    ceilings = {"inception_score": m["inception_score"],
                "inception_score_std": m["inception_score_std"],
                "classes_covered": float(data.num_classes)}
    return {"floors": floors, "ceilings": ceilings, "n": n, "seed": cfg.seed}


def get_or_compute_floors(storage: Storage, judge: Judge, data: PreparedData,
                          cfg: EvalConfig) -> dict[str, Any]:
    """Floors cached next to the judge (`judges/<version>/floors/n<n>-seed<seed>.json`).

    The cached document is reused only if it was computed by the same judge weights and the
    same class-share threshold; otherwise it is recomputed and overwritten.
    """
    n = min(n_samples(cfg, data), len(data.x_train))
    uri = f"{judge_prefix(storage, data.version)}/floors/n{n}-seed{cfg.seed}.json"
    key = {"judge_sha256": judge.meta.get("weights_sha256"),
           "class_share_threshold": cfg.class_share_threshold}
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


def evaluate_generator(
    generator: nn.Module, data: PreparedData, judge: Judge, cfg: EvalConfig,
    history: list[dict[str, float]] | None = None, *, floors: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Score `generator` on `data` with `judge`; no storage needed.

    Returns (result, pictures): result has the `Report` fields metrics, floors, ceilings,
    class_hist, classes_covered, judge_accuracy, conditional_accuracy, n_samples and seeds;
    pictures maps samples / real_vs_generated / curves to PNG bytes. `floors` (from
    `compute_floors` or its cache) is computed here when not given. Raises `JudgeError` when the
    judge's holdout accuracy is under `cfg.min_judge_accuracy`.
    """
    check_judge(judge, cfg.min_judge_accuracy)
    if len(data.x_holdout) < MIN_HOLDOUT:
        raise ValueError(f"dataset {data.name!r} has {len(data.x_holdout)} holdout images; "
                         f"evaluation needs at least {MIN_HOLDOUT} (raise data.limit or "
                         "data.holdout_fraction)")
    if judge.num_classes != data.num_classes:
        raise ValueError(f"judge has {judge.num_classes} classes, dataset {data.name!r} "
                         f"{data.num_classes}")
    n = n_samples(cfg, data)
    p_real = M.class_shares(data.y_train, data.num_classes)  # (K,)
    conditional = bool(getattr(generator, "conditional", False))
    labels = proportional_labels(p_real, n, cfg.seed) if conditional else None
    fake, nonfinite = _checked(sample_images(generator, n, cfg.seed, labels), data.x_train)
    predicted = judge.predict(fake)  # (n,)
    stats = M.class_stats(predicted, p_real, cfg.class_share_threshold)
    metrics = sample_metrics(judge, data.x_holdout.float(), fake, cfg.seed)
    metrics.update(class_kl=float(stats["class_kl"]),  # type: ignore[arg-type]
                   classes_covered=float(stats["classes_covered"]),  # type: ignore[arg-type]
                   nonfinite_fraction=nonfinite, judge_accuracy=judge.accuracy)
    cond_acc = None
    if labels is not None:
        cond_acc = float((predicted == labels).float().mean())
        metrics["conditional_accuracy"] = cond_acc
    fl = floors or compute_floors(judge, data, cfg)
    result = {
        "metrics": metrics, "floors": fl["floors"], "ceilings": fl["ceilings"],
        "class_hist": stats["class_hist"], "classes_covered": stats["classes_covered"],
        "judge_accuracy": judge.accuracy, "conditional_accuracy": cond_acc, "n_samples": n,
        "seeds": {"eval": cfg.seed, "judge": judge.seed},
    }
    pics = make_pictures(generator, data, fake, labels if labels is not None else predicted,
                         cfg.seed, history)
    return result, pics


def evaluate(storage: Storage, dataset: DatasetRef, trained: TrainedRef,
             cfg: EvalConfig) -> Report:
    """The evaluation stage: URIs in, report and pictures under `runs/<run_id>/eval/` out
    (`eval/epoch_<N>/` for a run that continued from a checkpoint, so that the report of an
    earlier registration of the run id stays as it was)."""
    if trained.dataset_version != dataset.version:
        raise ValueError(f"run {trained.run_id!r} was trained on dataset version "
                         f"{trained.dataset_version!r}, asked to evaluate on {dataset.version!r}")
    data = load_prepared(storage, dataset)
    judge = get_or_train_judge(storage, data, cfg)
    floors = get_or_compute_floors(storage, judge, data, cfg)
    ckpt = load_checkpoint(storage.get_bytes(trained.checkpoint_uri))
    generator = generator_from_checkpoint(ckpt, use_ema=True)
    history = ckpt.get("history") or trained.history
    result, pics = evaluate_generator(generator, data, judge, cfg, history, floors=floors)

    prefix = storage.settings.s3_uri("runs", trained.run_id, "eval")
    if trained.resumed_from_epoch:  # a continued run id: never overwrite an earlier report
        prefix = f"{prefix}/epoch_{trained.epochs_completed:05d}"
    artifacts = {name: f"{prefix}/{PICTURE_FILES[name]}" for name in pics}
    train_seed = trained.train_cfg.get("seed")
    if isinstance(train_seed, int):
        result["seeds"] = {**result["seeds"], "train": train_seed}
    report = Report(run_id=trained.run_id, dataset_version=dataset.version,
                    diverged=trained.diverged, report_uri=f"{prefix}/report.json",
                    markdown_uri=f"{prefix}/report.md", artifacts=artifacts, **result)
    report = report.model_copy(update={"markdown": render_markdown(report)})
    for name, png in pics.items():
        storage.put_bytes(artifacts[name], png, "image/png")
    storage.put_bytes(report.markdown_uri, report.markdown.encode(), "text/markdown")
    # report.json last: its presence means the evaluation is complete.
    storage.put_json(report.report_uri, report.model_dump(mode="json", exclude={"markdown"}))
    return report


# --------------------------------------------------------------------------- report


_ROWS = (  # (metric key, label, better direction)
    ("fid", "FID", "↓"), ("kid_mean", "KID", "↓"), ("precision", "precision (k=3)", "↑"),
    ("recall", "recall (k=3)", "↑"), ("density", "density (k=5)", "↑"),
    ("coverage", "coverage (k=5)", "↑"), ("inception_score", "classifier IS", "↑"),
    ("classes_covered", "classes covered", "↑"), ("class_kl", "KL(real ‖ gen classes)", "↓"),
    ("conditional_accuracy", "conditional accuracy", "↑"),
)


def render_markdown(report: Report) -> str:
    """A short markdown rendering: header lines and a metric | candidate | real-data table."""
    seeds = ", ".join(f"{k} {v}" for k, v in sorted(report.seeds.items()))
    lines = [
        f"# Evaluation of run `{report.run_id}`", "",
        f"- dataset version `{report.dataset_version}`, {report.n_samples} generated samples",
        f"- judge holdout accuracy {report.judge_accuracy:.4f}; seeds: {seeds}",
        f"- diverged in training: {'yes' if report.diverged else 'no'}", "",
    ]
    rows = []
    for key, label, better in _ROWS:
        if key not in report.metrics:
            continue
        cand = fmt_number(report.metrics[key])
        ref = fmt_number(report.floors.get(key, report.ceilings.get(key)))
        if key == "kid_mean":  # KID is noisy on small holdouts: show its spread over subsets
            cand += f" ± {fmt_number(report.metrics.get('kid_std'))}"
            ref += f" ± {fmt_number(report.floors.get('kid_std'))}"
        rows.append([f"{label} {better}", cand, ref])
    hist = " ".join(f"{i}:{s:.3f}" for i, s in enumerate(report.class_hist))
    lines += [markdown_table(["metric", "candidate", "real data (floor / ceiling)"], rows),
              "", f"Generated class shares (judge): {hist}", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- gate


def gate(report: Report, champion_metrics: dict[str, float] | None, cfg: GateConfig, *,
         champion_version: str | None = None) -> GateDecision:
    """Promote only if every rule passes; one line per rule in `reasons`, passed or failed.

    Rules: trained without divergence; covers every class (if `require_all_classes`); class KL
    under `max_class_kl`; recall at least `min_recall_ratio` × real data's (mode collapse);
    FID below the champion's minus `fid_margin` (a tie does not promote).
    With no champion, only the absolute rules apply.
    """
    if "fid" not in report.metrics or "class_kl" not in report.metrics:
        raise ValueError(f"report of run {report.run_id!r} lacks 'fid' or 'class_kl' metrics")
    checks: list[tuple[bool, str]] = []
    checks.append((not report.diverged, "training finished without divergence"
                   if not report.diverged else "training diverged"))
    k = len(report.class_hist)
    if cfg.require_all_classes:
        checks.append((report.classes_covered >= k,
                       f"classes covered {report.classes_covered}/{k} (all required)"))
    else:
        checks.append((True, f"classes covered {report.classes_covered}/{k} (not required)"))
    kl = report.metrics["class_kl"]
    checks.append((kl < cfg.max_class_kl, f"class KL {kl:.4g} < max_class_kl {cfg.max_class_kl}"))
    if cfg.min_recall_ratio > 0:
        checks.append(_recall_check(report, cfg.min_recall_ratio))
    fid = report.metrics["fid"]
    champion_fid = None
    if champion_metrics is None:
        checks.append((True, f"no champion: FID {fid:.4g} judged on the absolute rules only"))
    else:
        if "fid" not in champion_metrics:
            raise ValueError(f"champion {champion_version or '?'} metrics lack 'fid': "
                             f"{sorted(champion_metrics)}")
        champion_fid = float(champion_metrics["fid"])
        checks.append((fid < champion_fid - cfg.fid_margin,
                       f"FID {fid:.4g} < champion {champion_version or '?'} FID "
                       f"{champion_fid:.4g} - margin {cfg.fid_margin}"))
    reasons = [f"{'PASS' if ok else 'FAIL'}: {text}" for ok, text in checks]
    return GateDecision(promote=all(ok for ok, _ in checks), reasons=reasons,
                        champion_version=champion_version, champion_fid=champion_fid)


def _recall_check(report: Report, ratio: float) -> tuple[bool, str]:
    """Recall ≥ ratio × the real-vs-real recall floor: the share of real images that lie in the
    generated manifold. A collapsed G (one image per class) keeps precision, class coverage and
    a fair FID on digits, but its recall drops towards 0."""
    recall, floor = report.metrics.get("recall"), report.floors.get("recall")
    if recall is None or floor is None:
        raise ValueError(f"report of run {report.run_id!r} lacks the recall metric or floor "
                         "needed by gate.min_recall_ratio (set it to 0 to skip the rule)")
    need = ratio * floor
    return (recall >= need, f"recall {recall:.3g} >= {ratio} × real recall {floor:.3g} "
            f"= {need:.3g} (diversity; low = mode collapse)")
