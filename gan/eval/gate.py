"""The promotion gate: pure rules from an evaluation report to a decision with its reasons.

What this module is: `gate(report, champion_metrics, cfg, champion_version=...)`, one line per
rule, each stating its comparison the way round it holds ("class KL 10.2 exceeds ...").
Absolute rules: trained without divergence, few non-finite samples, recall (mode collapse),
copying (memorisation: Meehan et al. 2020's C_T and the distance ratio). Class rules, relative
to the real data under the same judge: the real held-out images scored as if they were samples
(`report.floors`) have their own class KL and classes covered, which are the judge's error; the
generator may exceed that KL by at most `gate.max_class_kl` and must cover as many classes.
They apply only under a classifier judge (a label-free judge has no classes) of holdout
accuracy ≥ `gate.min_class_judge_accuracy` (below it, a judge's class figures are mostly its
own error: the line says so, and passes). The FID lines name the judge whose feature space
they are measured in (`report.judge`). The comparison with a champion is like for like only:
it uses the champion's scores from the *same* evaluation (`report.champion`: same judge,
holdout, n and latent seeds), never numbers from its version tags, which may come from another
judge; and it is noise-aware (see `fid_rule`).

What it is not: no metric computation (`gan.eval.evaluate`, `gan.eval.metrics`), no registry
(`gan.registry.publish` reads the champion's version and applies the decision).
"""

from __future__ import annotations

import math

from gan.core.config import GateConfig
from gan.core.records import GateDecision, Report

__all__ = ["fid_rule", "gate"]

Check = tuple[bool, str]


def gate(report: Report, champion_metrics: dict[str, float] | None, cfg: GateConfig, *,
         champion_version: str | None = None) -> GateDecision:
    """Promote only if every rule passes; one line per rule in `reasons`, passed or failed.

    `champion_version`: the registry's current `@champion` (None: there is none, and only the
    absolute rules apply). `champion_metrics`: its version tags, kept for the caller's
    signature and never compared — they may have been measured under another judge; the
    comparison reads `report.champion`, which must be that same version re-scored.
    """
    del champion_metrics  # see docstring: like-for-like numbers come from the report
    classes = report.judge == "classifier"  # the label-free judge has no class metrics
    if "fid" not in report.metrics or (classes and "class_kl" not in report.metrics):
        raise ValueError(f"report of run {report.run_id!r} lacks 'fid' or 'class_kl' metrics")
    checks: list[Check] = [
        _divergence_check(report),
        _nonfinite_check(report, cfg.max_nonfinite_fraction),
    ]
    if classes and report.judge_accuracy < cfg.min_class_judge_accuracy:
        checks.append((True, f"class coverage and class KL not applied: the classifier judge's "
                             f"holdout accuracy {report.judge_accuracy:.4g} is below "
                             f"gate.min_class_judge_accuracy={cfg.min_class_judge_accuracy} "
                             f"(class KL {report.metrics['class_kl']:.4g}, classes covered "
                             f"{report.classes_covered}/{len(report.class_hist)}: reported "
                             "only)"))
    elif classes:
        checks += [_classes_check(report, cfg.require_all_classes),
                   _kl_check(report, cfg.max_class_kl)]
    else:
        checks.append((True, _no_classes_line(report)))
    if cfg.min_recall_ratio > 0:
        checks.append(_recall_check(report, cfg.min_recall_ratio))
    checks += _copy_checks(report, cfg)
    champion_fid = None
    if champion_version is None:
        checks.append((True, f"no champion: FID {report.metrics['fid']:.4g} ({report.judge} "
                             "judge) judged on the absolute rules only"))
    else:
        score = report.champion
        if score is None or score.version != champion_version:
            scored = f"v{score.version}" if score is not None else "no champion"
            checks.append((False, f"champion v{champion_version} was not re-scored in this "
                                  f"evaluation ({scored} was): without a like-for-like "
                                  "comparison nothing is promoted automatically"))
        elif not score.comparable:
            checks.append((False, f"champion v{champion_version} cannot be scored on this "
                                  f"data ({score.reason}): not promoted automatically"))
        else:
            champion_fid = score.metrics.get("fid")
            checks.append(fid_rule(report, cfg.noise_k, cfg.fid_margin))
    reasons = [f"{'PASS' if ok else 'FAIL'}: {text}" for ok, text in checks]
    return GateDecision(promote=all(ok for ok, _ in checks), reasons=reasons,
                        champion_version=champion_version, champion_fid=champion_fid)


def _spread(values: list[float]) -> float:
    """Sample standard deviation (n−1); 0 for fewer than two values."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def fid_rule(report: Report, noise_k: float, margin: float) -> Check:
    """The noise-aware comparison with the re-scored champion.

    With FID_cand(s) and FID_champ(s) measured on the same latent seeds s = 1..S, the paired
    differences d(s) = FID_champ(s) − FID_cand(s) have mean d̄ and spread σ_d (sample std).
    Promote iff d̄ > margin + noise_k · max(σ_d, σ_pool), σ_pool = √((σ_cand² + σ_champ²)/2),
    the per-model spread across seeds: the improvement must exceed the measured evaluation
    noise. A rerun of the same model (d ≡ 0) never passes, nor does any difference within
    noise_k spreads. With noise_k = 2 this is about a one-sided test at 2.5 % under a normal
    model of the evaluation noise (conservative for S = 3: σ_pool also counts).
    """
    assert report.champion is not None
    cand = report.per_seed.get("fid") or [report.metrics["fid"]]
    champ = report.champion.per_seed.get("fid") or [report.champion.metrics["fid"]]
    if len(cand) != len(champ):
        raise ValueError(f"candidate has {len(cand)} FID values, re-scored champion "
                         f"{len(champ)}: they must share the evaluation seeds")
    diffs = [h - c for c, h in zip(cand, champ, strict=True)]
    d_mean = sum(diffs) / len(diffs)
    pooled = math.sqrt((_spread(cand) ** 2 + _spread(champ) ** 2) / 2)
    noise = max(_spread(diffs), pooled)
    need = margin + noise_k * noise
    c_mean, h_mean = sum(cand) / len(cand), sum(champ) / len(champ)
    head = (f"FID {c_mean:.4g} ± {_spread(cand):.2g} vs champion v{report.champion.version} "
            f"re-scored {h_mean:.4g} ± {_spread(champ):.2g} ({len(cand)} seeds, {report.judge} "
            f"judge): improvement "
            f"{d_mean:.3g}")
    bound = f"noise {noise_k} × {noise:.2g} + margin {margin} = {need:.3g}"
    if d_mean > need:  # NaN compares False: never promotes
        return True, f"{head} exceeds {bound}"
    return False, f"{head} does not exceed {bound} (a tie or a noise-level difference)"


def _divergence_check(report: Report) -> Check:
    """`report.diverged`: set by training, or by the evaluation from the generator it scored
    (`gan.eval.evaluate.divergence_evidence`: non-finite weights, a saturated last epoch), so
    this rule can fail although training raises on the divergences its guard sees."""
    if not report.diverged:
        return True, "training finished without divergence"
    why = f": {report.divergence_reason}" if report.divergence_reason else ""
    return False, f"training diverged{why}"


def _nonfinite_check(report: Report, limit: float) -> Check:
    frac = report.metrics.get("nonfinite_fraction", 0.0)
    if frac <= limit:
        return True, f"non-finite samples {frac:.3g} within the maximum {limit}"
    return False, (f"non-finite samples {frac:.3g} exceed the maximum {limit} (NaN/inf pixels "
                   "were zeroed for the metrics)")


def _no_classes_line(report: Report) -> str:
    """Why a report has no class rules: no labels, or a label-free judge on labelled data."""
    space = f"metrics in the {report.judge} judge's feature space"
    ref = report.judge_ref
    if ref is not None and ref.labelled:
        return (f"the {report.judge} judge has no classes: class coverage and class KL not "
                f"judged ({space}){_origin(report)}")
    return f"no labels: class coverage and class KL not judged ({space}){_origin(report)}"


def _origin(report: Report) -> str:
    """'; judge reused from its cache: <why this kind>' ('' for a report without a JudgeRef)."""
    ref = report.judge_ref
    if ref is None:
        return ""
    how = "reused from its cache" if ref.reused else "trained for this dataset version"
    return f"; judge {how}: {ref.reason}"


def _judge_words(report: Report) -> str:
    return f"classifier judge, holdout accuracy {report.judge_accuracy:.4g}{_origin(report)}"


def _classes_check(report: Report, required: bool) -> Check:
    """Classes covered (share > eval.class_share_threshold) against the real held-out images'
    count under the same judge (all K when a report has no such floor)."""
    k, covered = len(report.class_hist), report.classes_covered
    real = int(report.floors.get("classes_covered", k))
    ref = ("real held-out images " if "classes_covered" in report.floors
           else "no real held-out figure in this report: ")
    what = (f"classes covered {covered}/{k}, {ref}{real}/{k} under the same judge "
            f"({_judge_words(report)})")
    if not required:
        return True, f"{what}; not required"
    if covered >= real:
        return True, f"{what}; as many required"
    return False, f"{what}: {real - covered} short"


def _kl_check(report: Report, allowance: float) -> Check:
    """KL(real ‖ generated class shares) ≤ the real held-out images' own KL under the same judge
    (its error; 0 when a report has no such floor) + `allowance` (gate.max_class_kl)."""
    kl = report.metrics["class_kl"]
    real = report.floors.get("class_kl")
    bound = (real or 0.0) + allowance
    if real is None:  # a report from before the class floors
        what = (f"class KL {kl:.4g} {{}} gate.max_class_kl {allowance} (no real held-out "
                f"figure in this report; {_judge_words(report)})")
    else:
        what = (f"class KL {kl:.4g} {{}} real held-out images' {real:.4g} + gate.max_class_kl "
                f"{allowance} = {bound:.4g} ({_judge_words(report)})")
    if kl <= bound:
        return True, what.format("is within")
    return False, what.format("exceeds")  # NaN lands here too


def _recall_check(report: Report, ratio: float) -> Check:
    """Recall ≥ ratio × the real-vs-real recall floor: the share of real images that lie in the
    generated manifold. A collapsed G (one image per class) keeps precision, class coverage and
    a fair FID on digits, but its recall drops towards 0."""
    recall, floor = report.metrics.get("recall"), report.floors.get("recall")
    if recall is None or floor is None:
        raise ValueError(f"report of run {report.run_id!r} lacks the recall metric or floor "
                         "needed by gate.min_recall_ratio (set it to 0 to skip the rule)")
    need = ratio * floor
    if recall >= need:
        return True, (f"recall {recall:.3g} reaches {ratio} × real recall {floor:.3g} = "
                      f"{need:.3g} (diversity)")
    return False, (f"recall {recall:.3g} is below {ratio} × real recall {floor:.3g} = "
                   f"{need:.3g} (low diversity: mode collapse)")


def _copy_checks(report: Report, cfg: GateConfig) -> list[Check]:
    """Memorisation (see `gan.eval.metrics.copy_stats`): a generator that returns training
    images scores at the real-data floor on every other metric. Two rules, each line giving
    both figures: Meehan et al. 2020's C_T (`gate.min_copy_ct`, their threshold −3: under the
    null each cell's Z_U is about N(0, 1) and C_T, their weighted mean, has a spread of at
    most 1, so −3 is a one-sided false alarm rate under 0.2 %), and the median distance ratio
    (`gate.min_copy_distance_ratio`), which a generator copying half its samples or more, or
    drawing training images barely changed, cannot reach."""
    checks: list[Check] = []
    ct_min, ratio_min = cfg.min_copy_ct, cfg.min_copy_distance_ratio
    if ct_min is None and ratio_min <= 0:
        return checks
    ct, ratio = report.metrics.get("copy_ct"), report.metrics.get("copy_distance_ratio")
    if ct is None or ratio is None:
        raise ValueError(f"report of run {report.run_id!r} lacks 'copy_ct' or "
                         "'copy_distance_ratio', needed by gate.min_copy_ct and "
                         "gate.min_copy_distance_ratio (empty and 0 skip the rules)")
    if ct_min is not None:
        what = f"copy test C_T {ct:.3g} (Meehan et al. 2020; distance ratio {ratio:.3g})"
        if ct >= ct_min:  # NaN (no cell with enough samples) fails
            checks.append((True, f"{what} is not below {ct_min}: samples sit no nearer to the "
                                 "training images than held-out images do"))
        else:
            checks.append((False, f"{what} is below {ct_min}"
                                  + (" or could not be computed" if math.isnan(ct) else "")
                                  + ": samples sit nearer to the training images than held-out "
                                    "images do; the generator reproduces training images"))
    if ratio_min > 0:
        what = (f"copy distance ratio {ratio:.3g} (median sample-to-train over holdout-to-train "
                f"distance; C_T {ct:.3g})")
        if ratio >= ratio_min:
            checks.append((True, f"{what} reaches the minimum {ratio_min}"))
        else:
            checks.append((False, f"{what} is below the minimum {ratio_min}: the typical sample "
                                  "is a training image or nearly; the generator reproduces "
                                  "training images"))
    return checks
