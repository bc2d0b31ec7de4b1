"""The evaluation report as markdown: what a person reads in the run's `report.md`.

What it is not: no scoring (`gan.eval.evaluate`), no decision (`gan.eval.gate`).
"""

from __future__ import annotations

from gan.core.records import Report
from gan.core.tables import fmt_number, markdown_table

_ROWS = (  # (metric key, label, better direction)
    ("fid", "FID", "↓"), ("kid_mean", "KID", "↓"), ("precision", "precision (k=3)", "↑"),
    ("recall", "recall (k=3)", "↑"), ("density", "density (k=5)", "↑"),
    ("coverage", "coverage (k=5)", "↑"), ("inception_score", "classifier IS", "↑"),
    ("classes_covered", "classes covered", "↑"), ("class_kl", "KL(real ‖ gen classes)", "↓"),
    ("conditional_accuracy", "conditional accuracy", "↑"),
    ("copy_ct", "copy test C_T (fresh ≈ 0, copying < −3)", "↑"),
    ("copy_fraction", "copy fraction (fresh ≈ 0.1)", "↓"),
    ("copy_distance_ratio", "copy distance ratio (fresh ≈ 1)", "↑"),
    ("nonfinite_fraction", "non-finite samples", "↓"),
)


def _pm(metrics: dict[str, float], spread: dict[str, float], key: str) -> str:
    text = fmt_number(metrics.get(key))
    return f"{text} ± {fmt_number(spread[key])}" if spread.get(key) else text


def render_markdown(report: Report) -> str:
    """A short markdown rendering: header lines and a table of metric | candidate (mean ±
    spread over the eval seeds) | re-scored champion | real data."""
    seeds = ", ".join(f"{k} {v}" for k, v in sorted(report.seeds.items()))
    champ = report.champion
    lines = [
        f"# Evaluation of run `{report.run_id}`", "",
        f"- dataset version `{report.dataset_version}`, {report.n_samples} generated samples "
        f"per seed, eval seeds {report.eval_seeds or [report.seeds.get('eval')]} "
        "(values: mean ± spread over them)",
        f"- {_judge_line(report)}; seeds: {seeds}",
        *_judge_origin(report),
        f"- diverged in training: {'yes' if report.diverged else 'no'}",
    ]
    if champ is not None and not champ.comparable:
        lines.append(f"- champion v{champ.version} could not be re-scored: {champ.reason}")
    lines.append("")
    head = ["metric", "candidate"]
    if champ is not None and champ.comparable:
        head.append(f"champion v{champ.version} (re-scored)")
    head.append("real data (floor / ceiling)")
    rows = []
    for key, label, better in _ROWS:
        if key not in report.metrics:
            continue
        row = [f"{label} {better}", _pm(report.metrics, report.spread, key)]
        if champ is not None and champ.comparable:
            row.append(_pm(champ.metrics, champ.spread, key))
        ref = fmt_number(report.floors.get(key, report.ceilings.get(key)))
        if key == "kid_mean" and report.floors.get("kid_std") is not None:
            ref += f" ± {fmt_number(report.floors.get('kid_std'))}"  # over KID subsets
        rows.append([*row, ref])
    lines += [markdown_table(head, rows), ""]
    lines += _inception_lines(report)
    if report.class_hist:
        hist = " ".join(f"{i}:{s:.3f}" for i, s in enumerate(report.class_hist))
        lines += [f"Generated class shares (judge): {hist}", ""]
    return "\n".join(lines)


def _judge_line(report: Report) -> str:
    """Which judge's feature space the metrics are in, and how good it was."""
    if report.judge == "classifier":
        line = f"judge: classifier, holdout accuracy {report.judge_accuracy:.4f}"
    else:
        q = ", ".join(f"{k} {fmt_number(v)}" for k, v in sorted(report.judge_quality.items()))
        line = (f"judge: {report.judge} encoder (label-free; no class metrics; the champion is "
                f"re-scored under the same judge); quality: {q}")
    return line


def _judge_origin(report: Report) -> list[str]:
    """Why this kind of judge, whether it was reused, and the judges passed over (none for a
    report without a JudgeRef)."""
    ref = report.judge_ref
    if ref is None:
        return []
    how = "reused from its cache" if ref.reused else "trained for this dataset version"
    return [f"- why this judge: {ref.reason}; {how} (`{ref.uri}`)",
            *(f"- judge passed over: {skipped}" for skipped in ref.passed_over)]


def _inception_lines(report: Report) -> list[str]:
    """The standard Inception FID, apart from the judge's table: other feature space, no vote."""
    inc, key = report.inception, "fid_inception"
    if not inc or key not in report.metrics:
        return []
    weights = (f"`{inc['uri']}` (sha256 {str(inc['sha256'])[:12]}…, "
               + ("the standard file)" if inc.get("standard") else
                  "NOT the standard file: not comparable with published numbers)"))
    return [
        "## Standard FID (Inception-v3)", "",
        f"- **FID (Inception-v3 pool3, 2048-d; Heusel et al. / TF FID reference) ↓: "
        f"{_pm(report.metrics, report.spread, key)}**, real data (floor) "
        f"{fmt_number(report.floors.get(key))}; for comparison with published numbers only: "
        "it does not decide promotion (the gate uses the judge's FID above)",
        f"- {report.n_samples} generated samples per seed against the holdout; published "
        "FIDs mostly use 50,000 samples against the training set, and FID falls as n grows: "
        "compare at the same n",
        f"- weights {weights}; cost {inc.get('seconds')} s: {inc.get('images')} images through "
        f"Inception at {inc.get('images_per_s')} images/s ({inc.get('device')}) and one "
        "Fréchet distance per seed and floor", "",
    ]
