"""The judge study's tables and command line, on a made-up result (no training: seconds)."""

from __future__ import annotations

import json

import pytest

from gan.tools import judge_study
from gan.tools.judge_tables import render


def _sweep(name: str, metric: str, means: list[float], stds: list[float]) -> dict:
    z = [(b - a) / ((sa**2 + sb**2) ** 0.5)
         for a, b, sa, sb in zip(means, means[1:], stds, stds[1:], strict=False)]
    return {"disturbance": name, "metric": metric, "strengths": [0, 1, 2], "means": means,
            "stds": stds, "z": z, "monotone": all(v > 0 for v in z)}


def _scores(means: dict[str, float]) -> dict:
    return {g: {"mean": m, "std": 0.1, "values": [m - 0.1, m + 0.1]} for g, m in means.items()}


def _agreement(tau: float) -> dict:
    return {"tau": tau, "kept": 3, "pairs": 3, "discordant": [], "tau_b_all": tau}


def _result() -> dict:
    good = [_sweep("blur", "fid", [1.0, 5.0, 20.0], [0.5, 0.5, 1.0])]
    flat = [_sweep("blur", "fid", [1.0, 1.1, 0.9], [0.5, 0.5, 0.5])]
    gens = {"epoch_1": 50.0, "epoch_10": 5.0, "blurred": 20.0}
    return {
        "dataset": "digits", "sizes": {"n": 100, "repeats": 3, "seeds": [0, 1],
                                       "ladder_epochs": [1, 10]},
        "n_train": 1437, "n_holdout": 360, "channels": 1, "image_size": 28, "num_classes": 10,
        "ladder_train_s": 12.0, "total_s": 600.0,
        "provenance": {"date": "2026-01-01 00:00 UTC", "commit": "abc1234",
                       "machine": "x86_64 CPU, 2 cores (shared)", "quick": False},
        "reference": {"n_train": 1797, "note": "all digits", "accuracy": 0.99, "train_s": 9.0,
                      "scores": _scores(gens), "sweeps": good,
                      "second_seed": {"accuracy": 0.98, "scores": _scores(gens),
                                      "agreement": _agreement(1.0)}},
        "judges": {
            "classifier": {"quality": {"holdout_accuracy": 0.97}, "train_s": 5.0,
                           "sweeps": good, "scores": _scores(gens), "agreement": _agreement(1.0)},
            "colour-only (control)": {"quality": {}, "train_s": 0.0, "sweeps": flat,
                                      "scores": _scores({"epoch_1": 1.0, "epoch_10": 2.0,
                                                         "blurred": 3.0}),
                                      "agreement": _agreement(-0.333)}},
    }


def test_tables_say_which_judge_passes_and_where_it_was_measured():
    md = render([_result()])
    assert "commit abc1234" in md and "2 cores (shared)" in md and "2026-01-01" in md
    assert "| digits | classifier | 1,437 | holdout_accuracy 0.970 | 5 |" in md
    assert "*✓ min z 5.7*" in md  # the classifier's blur sweep passes every step
    assert "*✗ min z -0.3*" in md  # the colour-only control's does not
    assert "τ -0.333 (3/3)" in md and "τ 1.000 (3/3)" in md
    assert md.index("epoch_10 |") < md.index("blurred |") < md.index("epoch_1 |")


def test_table_only_rebuilds_from_json_and_bad_datasets_are_named(tmp_path, capsys):
    (tmp_path / "digits.json").write_text(json.dumps(_result()))
    assert judge_study.main(["--table-only", "--out", str(tmp_path)]) == 0
    assert "# Judge study" in (tmp_path / "judge_study.md").read_text()
    with pytest.raises(SystemExit):
        judge_study.main(["--datasets", "cifar", "--out", str(tmp_path)])
    assert "unknown --datasets ['cifar']" in capsys.readouterr().err
