"""The model card (gan.registry.model_card) and where a version's metrics are read from.

The card holds what a person needs on the MLflow version page: data, recipe, headline metrics
next to their floors, the gate's verdict and reasons, the sample grid, intended use, known
limits, the client snippet; a version's metrics come from its run (tags only for old ones).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from gan.core.config import ModelConfig, TrainConfig
from gan.core.records import DatasetRef, GateDecision, Report
from gan.registry import publish
from gan.registry.model_card import model_card, verdict

DATASET = DatasetRef(name="digits", version="0123456789abcdef", uri="s3://gan/datasets/digits/x/",
                     source="digits", n_train=1437, n_holdout=360, num_classes=10, image_size=28)
REPORT = Report(run_id="r1", dataset_version=DATASET.version,
                metrics={"fid": 3.25, "recall": 0.61, "class_kl": 0.004},
                floors={"fid": 0.8, "recall": 0.7}, ceilings={"inception_score": 9.1},
                class_hist=[0.1] * 10, classes_covered=10, judge_accuracy=0.97,
                conditional_accuracy=0.93, n_samples=1000, report_uri="s3://x/report.json",
                markdown_uri="s3://x/report.md")
PARAMS = {"model": ModelConfig(conditional=True, base_channels=32),
          "train": TrainConfig(epochs=100, loss="hinge")}


def test_card_reads_like_a_card() -> None:
    decision = GateDecision(promote=False, champion_version="3",
                            reasons=["FAIL: FID 3.25 < champion 3 FID 3.1", "PASS: classes"])
    card = model_card(name="gan-digits", version="4", report=REPORT, dataset=DATASET,
                      params=PARAMS, decision=decision, run_id="r1",
                      run_url="http://h:5000/#/experiments/1/runs/abc",
                      samples_url="http://h:5000/get-artifact?path=evaluation/samples.png",
                      flow_run_url="http://h:4200/runs/flow-run/f1")
    assert card.startswith("# gan-digits v4: class-conditional dcgan GAN generator")
    assert "**not promoted** (against champion v3)" in card
    assert "[MLflow run](http://h:5000/#/experiments/1/runs/abc)" in card
    assert "[Prefect flow run](http://h:4200/runs/flow-run/f1)" in card
    assert "`digits` version `0123456789abcdef`" in card and "1437 train / 360 held out" in card
    assert "| FID (judge features) | 3.25 | 0.8 | lower is better |" in card
    assert "| recall (diversity) | 0.61 | 0.7 | higher is better |" in card
    assert "| classes covered | 10 of 10 |" in card and "label accuracy" in card
    assert "- FAIL: FID 3.25 < champion 3 FID 3.1" in card
    assert "![samples](http://h:5000/get-artifact?path=evaluation/samples.png)" in card
    assert "## Intended use" in card and "## Known limits" in card
    assert 'mlflow.pyfunc.load_model("models:/gan-digits/4")' in card
    assert "100 epochs, batch 64" in card and "hinge" in card


def test_verdict_words() -> None:
    assert verdict(None) == "pending"
    assert verdict(GateDecision(promote=True, reasons=[])) == "champion"
    assert verdict(GateDecision(promote=False, reasons=[])) == "rejected"


class Client:
    """The two calls `version_metrics` makes."""

    def __init__(self, metrics: dict[str, float]) -> None:
        self.metrics = metrics

    def get_run(self, run_id: str) -> Any:
        return SimpleNamespace(data=SimpleNamespace(metrics=self.metrics))


def test_version_metrics_from_the_run_and_old_tags() -> None:
    run_metrics = {"fid": 3.25, "judge_accuracy": 0.97, "floor_fid": 0.8, "train/loss_d": 1.0,
                   "class_share_0": 0.1, "run/images_per_s": 100.0}
    new = SimpleNamespace(run_id="abc", tags={"run_id": "r1", "dataset_version": "v",
                                              "verdict": "champion", "gan.gate.applied": "true"})
    assert publish.version_metrics(Client(run_metrics), new) == {"fid": 3.25,
                                                                 "judge_accuracy": 0.97}
    old = SimpleNamespace(run_id=None, tags={"fid": "2.5", "run_id": "r0", "gate.promote": "true"})
    assert publish.version_metrics(Client({}), old) == {"fid": 2.5}
    assert publish.version_tags(REPORT, DATASET, "r1") == {"dataset_version": DATASET.version,
                                                           "run_id": "r1"}
