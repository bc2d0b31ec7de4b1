"""What a finished retraining run shows in the Prefect UI: the markdown summary and its links.

What this module is: pure functions from the stage records to text — the MLflow UI and
artifact-proxy URLs of a run and model version, artifact keys, and the summary markdown
(candidate vs champion vs real-data floor, the gate decision with one line per rule, links,
the sample grid). `flows.retrain` publishes the result as Prefect artifacts.

What it is not: no Prefect or MLflow calls, no metric computation (`gan.eval.evaluate`).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from gan.core.records import DatasetRef, ModelRef, Report, TrainedRef, Unchanged
from gan.core.tables import fmt_number, markdown_table

# (metric key, label, better direction); keys as in Report.metrics and the version tags.
ROWS = (
    ("fid", "FID", "↓"), ("kid_mean", "KID", "↓"), ("precision", "precision", "↑"),
    ("recall", "recall", "↑"), ("density", "density", "↑"), ("coverage", "coverage", "↑"),
    ("inception_score", "classifier IS", "↑"), ("classes_covered", "classes covered", "↑"),
    ("class_kl", "class KL", "↓"), ("conditional_accuracy", "conditional accuracy", "↑"),
)
SAMPLES_ARTIFACT = "evaluation/samples.png"  # where gan.registry.run_log logs the sample grid


@dataclass(frozen=True)
class Links:
    """MLflow UI pages and the sample grid of one registered run ('' without an HTTP server)."""

    run: str
    model_version: str
    samples_png: str


def mlflow_links(mlflow_uri: str | None, model: ModelRef) -> Links:
    """UI URLs: `<uri>/#/models/<name>/versions/<v>`; the PNG through MLflow's artifact proxy
    (`<uri>/get-artifact?path=...&run_uuid=...`), which the browser fetches without S3 keys."""
    base = (mlflow_uri or "").rstrip("/")
    if not base.startswith(("http://", "https://")):
        return Links(model.mlflow_run_url, "", "")
    name = urllib.parse.quote(model.name, safe="")
    query = urllib.parse.urlencode({"path": SAMPLES_ARTIFACT, "run_uuid": model.mlflow_run_id})
    return Links(
        run=model.mlflow_run_url,
        model_version=f"{base}/#/models/{name}/versions/{model.version}",
        samples_png=f"{base}/get-artifact?{query}",
    )


def artifact_key(model_name: str, what: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes): `<model>-<what>`."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{model_name}-{what}".lower()).strip("-")
    return slug or what


def metrics_table(report: Report, champion: dict[str, float] | None,
                  champion_version: str | None) -> str:
    head = f"champion v{champion_version}" if champion_version else "champion"
    rows = []
    for key, label, better in ROWS:
        if key not in report.metrics:
            continue
        ref = report.floors.get(key, report.ceilings.get(key))
        champ = (champion or {}).get(key)
        rows.append([f"{label} {better}", fmt_number(report.metrics[key]), fmt_number(champ),
                     fmt_number(ref)])
    return markdown_table(["metric", "candidate", head, "real data"], rows)


def summary_markdown(*, run_id: str, dataset: DatasetRef, trained: TrainedRef, report: Report,
                     model: ModelRef, champion: dict[str, float] | None, links: Links) -> str:
    """The run's summary artifact. `champion`: the metrics of the version the gate compared
    against (None when there was none)."""
    d = model.decision
    verdict = ("**promoted**: now `@champion`" if model.champion
               else "**not promoted**: stays `@challenger`")
    lines = [
        f"# Retraining run `{run_id}`", "",
        f"Model `{model.name}` version **{model.version}** — {verdict}.", "",
        f"- dataset `{dataset.name}` version `{dataset.version}` ({dataset.n_train} train / "
        f"{dataset.n_holdout} holdout images{', reused' if dataset.reused else ''})",
        f"- trained {trained.epochs_completed} epochs, {trained.global_step} steps, "
        f"{trained.images_per_s:.0f} images/s"
        + (f", resumed from epoch {trained.resumed_from_epoch}" if trained.resumed_from_epoch
           else "")
        + (", data streamed from its shards" if trained.data_path == "stream" else ""),
        f"- evaluated on {report.n_samples} samples; {report.judge} judge, "
        + (f"holdout accuracy {report.judge_accuracy:.3f}" if report.judge == "classifier"
           else "label-free: " + ", ".join(f"{k} {v:.3g}" for k, v in
                                           sorted(report.judge_quality.items())))
        + ("" if report.judge_ref is None else
           f" ({report.judge_ref.reason}; "
           f"{'reused' if report.judge_ref.reused else 'trained for this dataset version'})"),
        "",
        "## Metrics", "", metrics_table(report, champion, d.champion_version), "",
        *_inception_line(report),
        "## Gate decision", "",
        *[f"- {r}" for r in d.reasons], "",
        "## Links", "",
    ]
    if links.run:
        lines.append(f"- MLflow run: [{links.run}]({links.run})")
    if links.model_version:
        lines.append(f"- model version: [{model.uri}]({links.model_version})")
    lines += ["- load it: `from gan.registry import load_generator`; "
              f"`load_generator(\"models:/{model.name}@champion\")` or "
              f"`gan sample --model {model.uri}`", ""]
    if links.samples_png:
        lines += ["## Samples", "", f"![samples]({links.samples_png})", ""]
    return "\n".join(lines)


def _inception_line(report: Report) -> list[str]:
    """The optional standard FID, apart from the gated metrics (`gan.eval.inception`)."""
    if "fid_inception" not in report.metrics:
        return []
    spread = report.spread.get("fid_inception")
    value = fmt_number(report.metrics["fid_inception"]) + (
        f" ± {fmt_number(spread)}" if spread else "")
    return [f"Standard FID (Inception-v3, for comparison with published numbers; does not "
            f"decide promotion): {value}, real data "
            f"{fmt_number(report.floors.get('fid_inception'))}", ""]



def unchanged_markdown(result: Unchanged, champion_url: str = "") -> str:
    """The summary of a run that trained nothing because nothing changed since the champion."""
    where = (f"[v{result.champion_version}]({champion_url})" if champion_url
             else f"v{result.champion_version}")
    return "\n".join([
        f"# Run {result.run_id}: nothing changed",
        "",
        f"{result.reason}.",
        "",
        f"No training, no new version: `models:/{result.model_name}@champion` stays {where}. "
        "To train anyway, run again with `force` set (the form's *force* field, "
        "`gan retrain --force`).",
        "",
        markdown_table(["", "value"], [["dataset version", result.dataset_version],
                                       ["code version", result.code_version]]),
    ])
