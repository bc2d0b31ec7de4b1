"""The model card of a registered version: what a person reads on its MLflow page.

What this module is: `model_card(...)`, markdown built from the stage records — data (source,
version, image size, classes), recipe, headline metrics next to their real-data floors, the
gate's verdict and reasons, the sample grid, intended use, known limits and the two-line client
snippet. `gan.registry.publish` writes it as the version's description and as the run's
`model_card.md` artifact.

What it is not: no MLflow calls, no metric computation (`gan.eval`), no decision (the gate).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gan.core.records import DatasetRef, GateDecision, Report
from gan.core.tables import fmt_number, markdown_table
from gan.registry.portable.gan_generator_model import int_label

CARD_ARTIFACT = "model_card.md"
# (metric key, label, better) of the headline table, in this order; shown when measured.
HEADLINE = (
    ("fid", "FID (judge features)", "lower"),
    ("kid_mean", "KID", "lower"),
    ("precision", "precision (fidelity)", "higher"),
    ("recall", "recall (diversity)", "higher"),
    ("density", "density", "higher"),
    ("coverage", "coverage", "higher"),
    ("inception_score", "Inception score (judge)", "higher"),
    ("class_kl", "KL(real classes ‖ generated)", "lower"),
)


def verdict(decision: GateDecision | None) -> str:
    """One word for the version list and its tag: champion / rejected / pending."""
    if decision is None:
        return "pending"
    return "champion" if decision.promote else "rejected"


def _decision_lines(decision: GateDecision) -> list[str]:
    """Which decision this is and the report it was made on (none for older decisions)."""
    if decision.number > 1:
        earlier = ("decision 1" if decision.number == 2
                   else f"decisions 1 to {decision.number - 1}")
        return [f"Decision {decision.number}, re-decided (`redecide`) on report "
                f"`{decision.report_uri}`; {earlier} kept in the version's tags "
                "`gan.gate.decision.<n>`.", ""]
    return [f"Made on report `{decision.report_uri}`.", ""] if decision.report_uri else []


def _classes(dataset: DatasetRef) -> str:
    """The classes row: how many, and the data's labels of them (what `y` takes)."""
    if not dataset.labelled:
        return "unlabelled"
    labels = dataset.class_names or [str(i) for i in range(dataset.num_classes)]
    return f"{dataset.num_classes}: {', '.join(labels)}"


def _predict_line(dataset: DatasetRef, conditional: bool) -> str:
    """The snippet's call: a conditional model is asked for one of the data's own labels."""
    if not conditional:
        return 'x = g.predict({"n": 64, "seed": 0})'
    first = dataset.class_names[0] if dataset.class_names else "0"
    label = first if int_label(first) is not None else json.dumps(first)
    return (f'x = g.predict({{"n": 64, "seed": 0, "y": [{label}] * 64}})  # 64 labels of '
            'the data (see classes)')


def _cfg(params: Mapping[str, Any], section: str) -> dict[str, Any]:
    value = params.get(section) or {}
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else dict(value)


def model_card(*, name: str, version: str, report: Report, dataset: DatasetRef,
               params: Mapping[str, Any], decision: GateDecision | None, run_id: str,
               run_url: str = "", samples_url: str = "", flow_run_url: str = "") -> str:
    """The card as markdown. `params`: the config tree as given to `register` (sections
    "model", "train" as pydantic models or dicts); URLs are linked when given."""
    model, train = _cfg(params, "model"), _cfg(params, "train")
    c, s = dataset.channels, dataset.image_size
    kind = "class-conditional" if model.get("conditional") else "unconditional"
    lines = [f"# {name} v{version}: {kind} {model.get('arch', '?')} GAN generator", ""]
    verdict_line = {"champion": "**promoted to champion**", "rejected": "**not promoted**",
                    "pending": "**gate not applied yet**"}[verdict(decision)]
    against = ""
    if decision is not None:
        against = (f" (against champion v{decision.champion_version})"
                   if decision.champion_version else " (no champion before)")
    lines += [f"Gate: {verdict_line}{against}. Run `{run_id}`"
              + (f" · [MLflow run]({run_url})" if run_url else "")
              + (f" · [Prefect flow run]({flow_run_url})" if flow_run_url else "") + ".", ""]
    lines += ["## Data", "", markdown_table(["", ""], [
        ["source", dataset.source or dataset.name],
        ["dataset", f"`{dataset.name}` version `{dataset.version}`"],
        ["images", f"{c}×{s}×{s} ({'grayscale' if c == 1 else f'{c} channels'}), "
                   f"{dataset.n_train} train / {dataset.n_holdout} held out"],
        ["classes", _classes(dataset)]]), ""]
    recipe = [["architecture", f"{model.get('arch')} ({kind}), latent {model.get('latent_dim')}"
               + (f", base channels {model.get('base_channels')}"
                  if model.get("arch") == "dcgan" else "")],
              ["loss", str(train.get("loss", "?"))],
              ["optimisation", f"{train.get('epochs')} epochs, batch {train.get('batch_size')}, "
                               f"Adam lr G {train.get('lr_g')} / D {train.get('lr_d')}"],
              ["published weights", "EMA of G" if train.get("ema_decay") else "G"],
              ["seed", str(train.get("seed"))]]
    lines += ["## Recipe", "", markdown_table(["", ""], recipe), ""]
    rows = []
    for key, label, better in HEADLINE:
        if key in report.metrics:
            bound = report.floors.get(key, report.ceilings.get(key))
            rows.append([label, fmt_number(report.metrics[key]), fmt_number(bound),
                         f"{better} is better"])
    if report.judge == "classifier":  # a classifier judge: class coverage was judged
        real = report.floors.get("classes_covered")
        rows.append(["classes covered", f"{report.classes_covered} of {dataset.num_classes}",
                     "—" if real is None else f"{real:.0f} of {dataset.num_classes}",
                     "as many as real data"])
    if report.conditional_accuracy is not None:
        rows.append(["label accuracy (judge)", fmt_number(report.conditional_accuracy), "—",
                     "conditional: G draws the asked class"])
    if report.judge == "self-supervised":  # no labels: features learnt without them
        quality = ", ".join(f"{k} {fmt_number(v)}" for k, v in report.judge_quality.items())
        judge = f"a self-supervised judge (no labels; quality check: {quality or 'passed'})"
    else:
        judge = f"a classifier judge of accuracy {fmt_number(report.judge_accuracy)} on real data"
    ref = report.judge_ref
    if ref is not None:
        how = "reused from its cache" if ref.reused else "trained for this dataset version"
        judge += f" — chosen because {ref.reason}; {how}"
        judge += "".join(f"; passed over: {p}" for p in ref.passed_over)
    lines += ["## Headline metrics", "",
              f"On {report.n_samples} samples against the held-out split; the floor is the same "
              f"metric between real train and real held-out images (the best reachable; the "
              f"class figures: the real held-out images scored as if they were samples), in "
              f"the features of {judge}.", "",
              markdown_table(["metric", "value", "real-data floor", ""], rows,
                             align=[None, "right", "right", None]), ""]
    if decision is not None:
        lines += ["## Gate", ""] + _decision_lines(decision) + [
            f"- {r}" for r in decision.reasons] + [""]
    if samples_url:
        layout = "one row per class" if model.get("conditional") else "seeded"
        lines += ["## Samples", "", f"[sample grid ({layout})]({samples_url})", "",
                  f"![samples]({samples_url})", ""]
    lines += [
        "## Intended use", "",
        f"Drawing {s}×{s} images like `{dataset.name}` for demos, data augmentation, and anomaly "
        "scoring or inpainting on the same kind of images (`gan.apps`).", "",
        "## Known limits", "",
        f"- Trained on {dataset.n_train} images of one dataset: outside that domain its images "
        "and its discriminator's scores mean nothing.",
        "- Metrics use a judge network trained on the same data, not Inception: compare them "
        "between versions of this model only.",
        f"- FID and friends from {report.n_samples} samples carry sampling noise of a few "
        "percent; the gate compares versions on the same seeds.",
        "- A GAN can memorise or drop modes the metrics barely see; look at the samples.", "",
        "## Use it (torch + mlflow only)", "",
        "```python",
        "import mlflow",
        f'g = mlflow.pyfunc.load_model("models:/{name}/{version}")',
        _predict_line(dataset, bool(model.get("conditional"))),
        f"# x: float32 numpy (64, {c}, {s}, {s}) in [-1, 1]",
        "```", ""]
    return "\n".join(lines)
